package tlsfiles

import "crypto/x509"

func x509VerifyOptions(cas *CAs) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: cas.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
}
