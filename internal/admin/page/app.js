// vigil's status page: the live view over /ui/stream.
//
// Everything shown is data: the DOM is built with createElement and
// textContent only (the Content-Security-Policy's Trusted Types would
// refuse a string handed to the DOM as markup anyway). The endpoint list is
// virtualized: whatever the number of endpoints, only the rows in view
// exist in the DOM, and rendering is coalesced to one pass per animation
// frame.
'use strict';

(function () {
  const ROW = 28;          // px, every row of the list
  const OVERSCAN = 10;     // rows drawn above and below the view
  const WINDOW_MS = 15 * 60 * 1000;
  const LOG_KEEP = 1000;   // records the tail keeps
  const LOG_SHOW = 300;    // records the tail draws
  const AUTO_EXPAND = 300; // clusters start expanded up to this many endpoints in all

  const COLORS = {
    h: '#2e9d5b', u: '#d64545', p: '#8c9bb0', d: '#e0a030', f: '#9b59b6', n: '#e4e7ec',
  };
  const SPAN_NAMES = { h: 'healthy', u: 'unhealthy', p: 'pending', d: 'draining', f: 'flapping', n: 'no data' };
  const KNOWN_EP = new Set(['address', 'weight', 'health', 'reason', 'since', 'cause', 'failures', 'check',
    'last_probe', 'last_latency_ms', 'inflight', 'hint', 'error', 'source', 'effective_weight']);
  const KNOWN_CLUSTER = new Set(['name', 'healthy', 'total', 'panic', 'lb_policy', 'panic_threshold', 'check', 'endpoints']);

  const S = {
    epoch: null, lastId: '', offset: 0, lostAt: 0,
    names: [], clusters: new Map(), eps: new Map(),
    log: [], logSkipped: 0, pending: 0,
    connected: false, downSince: 0, messages: 0, lastMsgAt: 0,
    expanded: new Map(), // cluster -> bool, the user's choices
    filter: '', problems: false, logCluster: '', logFilter: '',
    rows: [], rowsDirty: true, logDirty: true, viewDirty: true,
  };
  window.vigilStatus = S; // for the browser tests and the curious

  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };
  const now = () => Date.now() + S.offset;

  // ---- layout ---------------------------------------------------------

  const app = document.getElementById('app');
  const bar = el('div', 'bar');
  const filter = el('input', 'filter');
  filter.type = 'search';
  filter.placeholder = 'filter endpoints: cluster, address, health, reason, hint, error…';
  filter.id = 'filter';
  const problemsBox = el('input');
  problemsBox.type = 'checkbox';
  problemsBox.id = 'problems';
  const problemsLabel = el('label', 'check');
  problemsLabel.append(problemsBox, document.createTextNode(' not healthy only'));
  const expandAll = el('button', '', 'expand all');
  const collapseAll = el('button', '', 'collapse all');
  const counts = el('span', 'counts');
  counts.id = 'counts';
  bar.append(filter, problemsLabel, expandAll, collapseAll, counts);

  const head = el('div', 'row eph head');
  for (const t of ['endpoint', 'health', 'reason · hint', 'since', 'check', 'weight', 'in flight', 'probe', 'source · more']) {
    head.append(el('span', '', t));
  }
  const tlHead = el('span', '', 'last 15 min');
  tlHead.id = 'tl-head';
  head.append(tlHead);
  const list = el('div', 'list');
  list.id = 'list';
  const spacer = el('div', 'spacer');
  list.append(spacer);

  const logPanel = el('section', 'logpanel');
  const logBar = el('div', 'bar');
  const logTitle = el('h2', '', 'Eviction log');
  const logCluster = el('select');
  logCluster.id = 'log-cluster';
  const logFilter = el('input', 'filter');
  logFilter.type = 'search';
  logFilter.id = 'log-filter';
  logFilter.placeholder = 'filter records';
  const logNote = el('span', 'counts');
  logNote.id = 'log-note';
  logBar.append(logTitle, logCluster, logFilter, logNote);
  const logList = el('div', 'log');
  logList.id = 'log';
  logPanel.append(logBar, logList);

  app.append(bar, head, list, logPanel);

  filter.addEventListener('input', () => { S.filter = filter.value.trim().toLowerCase(); S.rowsDirty = true; schedule(); });
  problemsBox.addEventListener('change', () => { S.problems = problemsBox.checked; S.rowsDirty = true; schedule(); });
  expandAll.addEventListener('click', () => { for (const n of S.names) S.expanded.set(n, true); S.rowsDirty = true; schedule(); });
  collapseAll.addEventListener('click', () => { for (const n of S.names) S.expanded.set(n, false); S.rowsDirty = true; schedule(); });
  logCluster.addEventListener('change', () => { S.logCluster = logCluster.value; S.logDirty = true; schedule(); });
  logFilter.addEventListener('input', () => { S.logFilter = logFilter.value.trim().toLowerCase(); S.logDirty = true; schedule(); });
  list.addEventListener('scroll', () => { S.viewDirty = true; schedule(); }, { passive: true });
  window.addEventListener('resize', () => { S.viewDirty = true; schedule(); });

  // ---- the stream -----------------------------------------------------

  const conn = document.getElementById('conn');
  let es = null;
  let retry = 1000;
  function connect() {
    const url = '/ui/stream' + (S.lastId ? '?last_event_id=' + encodeURIComponent(S.lastId) : '');
    es = new EventSource(url);
    es.onopen = () => { retry = 1000; };
    es.onmessage = (e) => {
      if (e.lastEventId) S.lastId = e.lastEventId;
      let m;
      try { m = JSON.parse(e.data); } catch (err) { console.warn('vigil: bad message', err); return; }
      S.connected = true;
      S.downSince = 0;
      apply(m);
    };
    es.onerror = () => {
      if (S.connected) { S.downSince = Date.now(); S.lostAt = now(); }
      S.connected = false;
      showConn();
      // EventSource retries by itself after a dropped connection; after
      // an answer it cannot use (a 503 while vigil stops) it gives up, and
      // the page starts a new one, resuming from the last id.
      if (es.readyState === EventSource.CLOSED) {
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 10000);
      }
    };
  }

  function apply(m) {
    S.messages++;
    S.lastMsgAt = Date.now();
    S.offset = m.now - Date.now();
    if (m.full) {
      const old = S.epoch !== null && S.epoch !== m.epoch ? S.eps : null;
      const oldAt = S.lostAt || now();
      S.clusters = new Map();
      S.eps = new Map();
      S.log = [];
      S.carry = old ? carryTimelines(old, oldAt) : new Map();
      S.epoch = m.epoch;
    }
    if (m.names) {
      S.names = m.names;
      const keep = new Set(m.names);
      for (const [name] of S.clusters) if (!keep.has(name)) S.clusters.delete(name);
      for (const [id, ep] of S.eps) if (!keep.has(ep.c)) S.eps.delete(id);
      updateClusterSelect();
      S.rowsDirty = true;
    }
    for (const c of m.clusters || []) {
      let cl = S.clusters.get(c.name);
      if (!cl) { cl = { name: c.name, row: {}, traffic: [], ids: [] }; S.clusters.set(c.name, cl); }
      cl.row = c.row;
      cl.traffic = mergeTraffic(cl.traffic, c.traffic || []);
      if (c.ids) {
        const keep = new Set(c.ids);
        for (const id of cl.ids) if (!keep.has(id)) S.eps.delete(id);
        cl.ids = c.ids;
      }
      cl.rev = (cl.rev || 0) + 1;
      S.rowsDirty = true;
    }
    for (const e of m.endpoints || []) {
      const prev = S.eps.get(e.id);
      const ep = { id: e.id, c: e.c, row: e.row, tl: e.tl, rev: prev ? prev.rev + 1 : 1 };
      const before = S.carry.get(e.c + '\u0000' + e.row.address);
      if (before) ep.tl = before.concat(e.tl.filter((s) => s[0] > before[before.length - 1][0]));
      ep.search = searchText(ep);
      S.eps.set(e.id, ep);
      S.rowsDirty = true;
    }
    if (m.full) S.lostAt = 0;
    if (m.log && m.log.length) {
      for (const r of m.log) S.log.push({ r, text: JSON.stringify(r).toLowerCase() });
      if (S.log.length > LOG_KEEP) S.log.splice(0, S.log.length - LOG_KEEP);
      S.logDirty = true;
    }
    S.logSkipped += m.log_skipped || 0;
    S.pending = m.pending || 0;
    schedule();
  }

  // carry holds, across a restart of vigil, what the page saw of each
  // endpoint before it (by cluster and address), and prefixes it to the
  // new process's timelines.
  S.carry = new Map();

  // carryTimelines keeps what the page saw of each endpoint before vigil
  // restarted, followed by a "no data" span from when it lost vigil.
  function carryTimelines(eps, lostAt) {
    const out = new Map();
    for (const [, ep] of eps) {
      if (!ep.tl || !ep.tl.length) continue;
      const tl = ep.tl.filter((s) => s[0] < lostAt);
      tl.push([lostAt, 'n']);
      out.set(ep.c + '\u0000' + ep.row.address, tl);
    }
    return out;
  }

  function mergeTraffic(have, add) {
    if (!add.length) return have;
    const last = have.length ? have[have.length - 1][0] : -1;
    const out = have.concat(add.filter((p) => p[0] > last));
    return out.length > 120 ? out.slice(out.length - 120) : out;
  }

  function searchText(ep) {
    const r = ep.row;
    const parts = [ep.c, r.address, r.health, r.reason, r.hint, r.error, r.source, r.check];
    for (const k of Object.keys(r)) if (!KNOWN_EP.has(k)) parts.push(k, fmtValue(r[k]));
    return parts.filter(Boolean).join(' ').toLowerCase();
  }

  function updateClusterSelect() {
    const cur = logCluster.value;
    logCluster.replaceChildren();
    const all = el('option', '', 'all clusters');
    all.value = '';
    logCluster.append(all);
    for (const n of S.names) {
      const o = el('option', '', n);
      o.value = n;
      logCluster.append(o);
    }
    logCluster.value = S.names.includes(cur) ? cur : '';
    S.logCluster = logCluster.value;
  }

  // ---- rendering ------------------------------------------------------

  let scheduled = false;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => { scheduled = false; render(); });
  }

  function render() {
    const first = document.getElementById('static');
    if (first && S.epoch !== null) {
      first.remove();
      app.hidden = false;
    }
    showConn();
    if (S.rowsDirty) buildRows();
    drawList(S.rowsDirty || S.viewDirty);
    S.rowsDirty = S.viewDirty = false;
    if (S.logDirty) { drawLog(); S.logDirty = false; }
  }

  function showConn() {
    let total = 0, healthy = 0;
    for (const [, c] of S.clusters) { total += c.row.total || 0; healthy += c.row.healthy || 0; }
    if (S.connected) {
      conn.textContent = 'live · ' + S.names.length + ' clusters · ' + healthy + '/' + total + ' endpoints healthy' +
        (S.pending ? ' · catching up (' + S.pending + ' rows queued)' : '');
      conn.className = 'conn live';
    } else if (S.epoch === null) {
      conn.textContent = 'connecting…';
      conn.className = 'conn';
    } else {
      const since = S.downSince ? ' since ' + new Date(S.downSince).toLocaleTimeString() : '';
      conn.textContent = 'vigil unreachable' + since + ': reconnecting (shown as it was)';
      conn.className = 'conn down';
    }
  }

  function isExpanded(name) {
    if (S.expanded.has(name)) return S.expanded.get(name);
    return S.eps.size <= AUTO_EXPAND;
  }

  function buildRows() {
    const rows = [];
    const f = S.filter;
    let shown = 0, total = 0;
    for (const name of S.names) {
      const cl = S.clusters.get(name);
      if (!cl) continue;
      total += cl.ids.length;
      const match = [];
      const nameMatch = f && name.toLowerCase().includes(f);
      for (const id of cl.ids) {
        const ep = S.eps.get(id);
        if (!ep) continue;
        if (S.problems && ep.row.health === 'healthy') continue;
        if (f && !nameMatch && !ep.search.includes(f)) continue;
        match.push(ep);
      }
      if ((f || S.problems) && match.length === 0) continue;
      shown += match.length;
      const open = (f || S.problems) ? S.expanded.get(name) !== false : isExpanded(name);
      rows.push({ kind: 'c', cl, open, matched: match.length });
      if (open) for (const ep of match) rows.push({ kind: 'e', ep });
    }
    S.rows = rows;
    counts.textContent = (f || S.problems) ? shown + ' of ' + total + ' endpoints match' : total + ' endpoints';
    spacer.style.height = (rows.length * ROW) + 'px';
  }

  const live = new Map(); // key -> {node, rev}
  function drawList(force) {
    if (force === 'tick' || S.rowsDirty) {
      S.tlWindow = timelineWindow(now());
      tlHead.textContent = 'last ' + Math.round(S.tlWindow / 60000) + ' min';
    }
    const top = list.scrollTop;
    const h = list.clientHeight || 600;
    const lo = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    const hi = Math.min(S.rows.length, Math.ceil((top + h) / ROW) + OVERSCAN);
    const keep = new Set();
    const t = now();
    for (let i = lo; i < hi; i++) {
      const r = S.rows[i];
      const key = r.kind === 'c' ? 'c:' + r.cl.name : 'e:' + r.ep.id;
      const rev = r.kind === 'c' ? r.cl.rev + (r.open ? 'o' : 'x') + r.matched : r.ep.rev;
      keep.add(key);
      let cur = live.get(key);
      if (!cur || cur.rev !== rev || force === 'tick') {
        const node = r.kind === 'c' ? clusterRow(r, t) : endpointRow(r.ep, t);
        if (cur) cur.node.replaceWith(node); else list.append(node);
        cur = { node, rev };
        live.set(key, cur);
      }
      cur.node.style.transform = 'translateY(' + (i * ROW) + 'px)';
    }
    for (const [key, cur] of live) {
      if (!keep.has(key)) { cur.node.remove(); live.delete(key); }
    }
  }

  function clusterRow(r, t) {
    const c = r.cl.row;
    const row = el('div', 'row cl' + (c.panic ? ' panic' : c.healthy < c.total ? ' degraded' : ''));
    row.dataset.cluster = r.cl.name;
    const caret = el('button', 'caret', r.open ? '▾' : '▸');
    caret.title = r.open ? 'collapse' : 'expand';
    caret.addEventListener('click', () => { S.expanded.set(r.cl.name, !r.open); S.rowsDirty = true; schedule(); });
    const name = el('span', 'name', r.cl.name);
    const hb = el('span', 'hb');
    const meter = el('span', 'meter');
    const fill = el('span', 'fill');
    fill.style.width = (c.total ? (100 * c.healthy / c.total) : 0) + '%';
    meter.append(fill);
    hb.append(meter, el('span', 'num', c.healthy + ' / ' + c.total + ' healthy'));
    const panic = el('span', c.panic ? 'badge panic' : 'badge muted', c.panic ? 'PANIC' : 'no panic');
    panic.title = 'panic below ' + c.panic_threshold + '% healthy';
    const policy = el('span', 'policy', (c.lb_policy || '') + ' · ' + (c.check || ''));
    const tr = r.cl.traffic;
    const lastP = tr.length ? tr[tr.length - 1] : null;
    const rps = el('span', 'rate');
    rps.append(spark(tr, 1, COLORS.h), el('span', 'num', lastP ? fmtRate(lastP[1]) + ' RPC/s' : '– RPC/s'));
    rps.title = 'RPCs per second through grpc listeners, last ' + Math.round(tr.length * 5 / 60) + ' min (5 s samples)';
    const errs = el('span', 'rate');
    const errPct = lastP && lastP[1] > 0 ? (100 * lastP[2] / lastP[1]) : 0;
    errs.append(spark(tr, 2, COLORS.u), el('span', 'num' + (errPct > 0 ? ' bad' : ''), lastP ? fmtRate(lastP[2]) + ' err/s (' + errPct.toFixed(1) + '%)' : '– err/s'));
    errs.title = 'RPCs per second that ended with a code other than OK';
    const more = el('span', 'more');
    for (const k of Object.keys(c)) if (!KNOWN_CLUSTER.has(k) && present(c[k])) more.append(chip(k, c[k]));
    const matched = (S.filter || S.problems) ? el('span', 'muted', r.matched + ' shown') : el('span');
    row.append(caret, name, hb, panic, policy, rps, errs, matched, more);
    return row;
  }

  function endpointRow(ep, t) {
    const r = ep.row;
    const row = el('div', 'row ep h-' + r.health);
    row.dataset.cluster = ep.c;
    row.dataset.address = r.address;
    row.dataset.health = r.health;
    row.append(el('span', 'addr', r.address));
    row.append(el('span', 'badge h-' + r.health, r.health));
    const why = el('span', 'why');
    if (r.reason) why.append(el('span', 'reason', r.reason));
    if (r.hint) why.append(el('span', 'hint', r.hint));
    if (r.error) why.append(el('span', 'err', r.error));
    why.title = [r.reason, r.cause && '(' + r.cause + ')', r.hint, r.error].filter(Boolean).join(' · ');
    row.append(why);
    const since = el('span', 'since', r.since ? fmtAgo(t - Date.parse(r.since)) : '');
    if (r.since) since.title = new Date(r.since).toLocaleString();
    row.append(since);
    row.append(el('span', 'check', r.check + (r.failures ? ' · ' + r.failures + ' failed' : '')));
    const w = r.effective_weight !== undefined && r.effective_weight !== null && r.effective_weight !== r.weight
      ? r.effective_weight + ' / ' + r.weight : String(r.weight);
    const weight = el('span', 'num', w);
    weight.title = r.effective_weight !== undefined ? 'effective / configured weight' : 'weight';
    row.append(weight);
    row.append(el('span', 'num', r.inflight));
    const probe = el('span', 'num', r.last_latency_ms !== null && r.last_latency_ms !== undefined ? fmtMs(r.last_latency_ms) : '–');
    probe.title = r.last_probe ? 'last probe ' + new Date(r.last_probe).toLocaleTimeString() : 'no probe timed yet';
    row.append(probe);
    const more = el('span', 'more');
    if (r.source) more.append(chip('source', r.source));
    for (const k of Object.keys(r)) if (!KNOWN_EP.has(k) && present(r[k])) more.append(chip(k, r[k]));
    row.append(more);
    row.append(timeline(ep.tl, t));
    return row;
  }

  function present(v) {
    return v !== null && v !== undefined && v !== '' && v !== false && !(Array.isArray(v) && v.length === 0);
  }

  function chip(k, v) {
    const c = el('span', 'chip', k + ': ' + fmtValue(v));
    c.title = k + ': ' + fmtValue(v);
    return c;
  }

  function fmtValue(v) {
    if (v === null || v === undefined) return '';
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }

  // timeline draws the last 15 minutes of an endpoint's health.
  // timelineWindow is what the timelines span: 15 minutes, or less while
  // vigil (and so the history) is younger, so that a young history is not
  // a sliver at the right end.
  function timelineWindow(t) {
    let first = t;
    for (const [, ep] of S.eps) if (ep.tl && ep.tl.length && ep.tl[0][0] < first) first = ep.tl[0][0];
    return Math.max(60 * 1000, Math.min(WINDOW_MS, t - first));
  }

  function timeline(tl, t) {
    const c = el('canvas', 'tl');
    const W = 240, H = 14, dpr = window.devicePixelRatio || 1;
    c.width = W * dpr;
    c.height = H * dpr;
    const g = c.getContext('2d');
    g.scale(dpr, dpr);
    const span = S.tlWindow || WINDOW_MS;
    const from = t - span;
    const x = (ms) => Math.max(0, Math.min(W, (ms - from) / span * W));
    g.fillStyle = COLORS.n;
    g.fillRect(0, 0, W, H);
    const desc = [];
    for (let i = 0; i < (tl || []).length; i++) {
      const [start, code] = tl[i];
      const end = i + 1 < tl.length ? tl[i + 1][0] : t;
      if (end < from) continue;
      const x0 = x(start), x1 = Math.max(x(end), x0 + 1);
      g.fillStyle = COLORS[code] || COLORS.n;
      g.fillRect(x0, 0, x1 - x0, H);
      desc.push(SPAN_NAMES[code] + ' ' + fmtAgo(end - Math.max(start, from)));
    }
    c.dataset.spans = (tl || []).filter((s, i) => (i + 1 < tl.length ? tl[i + 1][0] : t) >= from).map((s) => s[1]).join('');
    c.title = desc.length ? 'last ' + Math.round(span / 60000) + ' min: ' + desc.join(', ') : 'no data';
    c.setAttribute('role', 'img');
    c.setAttribute('aria-label', c.title);
    return c;
  }

  function spark(tr, idx, color) {
    const c = el('canvas', 'spark');
    const W = 90, H = 18, dpr = window.devicePixelRatio || 1;
    c.width = W * dpr;
    c.height = H * dpr;
    const g = c.getContext('2d');
    g.scale(dpr, dpr);
    if (tr.length > 1) {
      let maxV = 0;
      for (const p of tr) maxV = Math.max(maxV, p[1]);
      // Ten minutes when there are; a short history is spread over the
      // width rather than squeezed into its right end.
      const n = Math.max(tr.length, 12);
      g.strokeStyle = color;
      g.lineWidth = 1.2;
      g.beginPath();
      tr.forEach((p, i) => {
        const xx = W - (tr.length - 1 - i) * (W / (n - 1));
        const yy = H - 1 - (maxV > 0 ? (p[idx] / maxV) * (H - 2) : 0);
        if (i === 0) g.moveTo(xx, yy); else g.lineTo(xx, yy);
      });
      g.stroke();
    }
    return c;
  }

  function drawLog() {
    const f = S.logFilter, cl = S.logCluster;
    const rows = [];
    for (let i = S.log.length - 1; i >= 0 && rows.length < LOG_SHOW; i--) {
      const x = S.log[i];
      if (cl && x.r.cluster !== cl) continue;
      if (f && !x.text.includes(f)) continue;
      rows.push(logRow(x.r));
    }
    logList.replaceChildren(...rows);
    if (rows.length === 0) logList.append(el('div', 'muted', S.log.length ? 'no record matches' : 'no records yet'));
    logNote.textContent = S.logSkipped
      ? S.logSkipped + ' records not shown (more than the page takes in a second); vigil\'s log and /events have every one'
      : 'newest first, live';
  }

  const LOG_KEYS = ['time', 'level', 'msg', 'cluster', 'endpoint', 'reason', 'hint', 'error'];
  function logRow(r) {
    const row = el('div', 'rec lvl-' + String(r.level || '').toLowerCase());
    const ts = Date.parse(r.time);
    row.append(el('span', 'time', isNaN(ts) ? String(r.time || '') : new Date(ts).toLocaleTimeString([], { hour12: false }) + '.' + String(ts % 1000).padStart(3, '0')));
    row.append(el('span', 'lvl', r.level));
    row.append(el('span', 'msg', r.msg));
    if (r.cluster !== undefined) row.append(el('span', 'kv', r.cluster));
    if (r.endpoint !== undefined) row.append(el('span', 'kv addr', r.endpoint));
    if (r.reason) row.append(el('span', 'reason', r.reason));
    const rest = [];
    for (const k of Object.keys(r)) if (!LOG_KEYS.includes(k)) rest.push(k + '=' + fmtValue(r[k]));
    if (rest.length) row.append(el('span', 'kvs', rest.join(' ')));
    if (r.hint) row.append(el('span', 'hint', r.hint));
    if (r.error) row.append(el('span', 'err', r.error));
    return row;
  }

  function fmtAgo(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm' + (s % 60) + 's';
    if (s < 172800) return Math.floor(s / 3600) + 'h' + Math.floor((s % 3600) / 60) + 'm';
    return Math.floor(s / 86400) + 'd';
  }
  function fmtMs(v) { return v < 10 ? v.toFixed(2) + ' ms' : v < 100 ? v.toFixed(1) + ' ms' : Math.round(v) + ' ms'; }
  function fmtRate(v) { return v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString(); }

  // Time moves: "since" and the timelines of the rows in view are redrawn
  // every second.
  setInterval(() => {
    if (S.epoch === null) return;
    drawList('tick');
    showConn();
  }, 1000);

  connect();
})();
