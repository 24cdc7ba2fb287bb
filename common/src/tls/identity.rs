//! Who a certificate names: its principal (the first DNS or URI subject
//! alternative name, else the subject's common name) and every name a
//! policy may match (`--allowed-client`).

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The identity of a verified peer certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The first DNS or URI SAN, else the CN.
    pub principal: String,
    /// Every DNS and URI SAN in certificate order, then the CN if the
    /// certificate has no such SAN.
    pub names: Vec<String>,
}

impl CertIdentity {
    /// Parses the end-entity certificate. `None` when it names nobody (no
    /// DNS/URI SAN and no CN) or does not parse; a verified certificate
    /// always parses.
    pub fn of(cert: &CertificateDer<'_>) -> Option<Self> {
        let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(s) | GeneralName::URI(s) => names.push((*s).to_owned()),
                    _ => {}
                }
            }
        }
        if names.is_empty()
            && let Some(cn) = parsed
                .subject()
                .iter_common_name()
                .next()
                .and_then(|a| a.as_str().ok())
        {
            names.push(cn.to_owned());
        }
        let principal = names.first()?.clone();
        Some(Self { principal, names })
    }

    /// Whether any of the certificate's names is in `allowed`.
    pub fn matches_any(&self, allowed: &[String]) -> bool {
        self.names.iter().any(|n| allowed.iter().any(|a| a == n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(sans: Vec<SanType>, cn: Option<&str>) -> CertificateDer<'static> {
        let mut p = CertificateParams::default();
        p.subject_alt_names = sans;
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn principal_is_the_first_dns_or_uri_san_else_the_cn() {
        let c = cert(
            vec![
                SanType::IpAddress("10.0.0.1".parse().unwrap()),
                SanType::URI("spiffe://ipa/central".try_into().unwrap()),
                SanType::DnsName("central.ipa".try_into().unwrap()),
            ],
            Some("ignored"),
        );
        let id = CertIdentity::of(&c).unwrap();
        assert_eq!(id.principal, "spiffe://ipa/central");
        assert_eq!(id.names, vec!["spiffe://ipa/central", "central.ipa"]);
        assert!(id.matches_any(&["central.ipa".to_owned()]));
        assert!(!id.matches_any(&["ignored".to_owned()]));

        let c = cert(vec![], Some("alice"));
        let id = CertIdentity::of(&c).unwrap();
        assert_eq!(id.principal, "alice");
        assert!(id.matches_any(&["alice".to_owned()]));

        assert_eq!(CertIdentity::of(&cert(vec![], None)), None);
        assert_eq!(CertIdentity::of(&CertificateDer::from(vec![1, 2, 3])), None);
    }
}
