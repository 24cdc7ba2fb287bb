//! The token file (`--auth-tokens`): who a bearer token belongs to and what
//! role it has, plus the roles of client-certificate principals.
//!
//! ```toml
//! [[token]]
//! principal = "alice"
//! role = "operator"
//! sha256 = "<64 hex digits: the SHA-256 of the token>"
//!
//! # Optional: the role of a client-certificate principal (--client-ca).
//! # Unlisted certificate principals are operators.
//! [[certificate]]
//! principal = "ci-bot"
//! role = "reader"
//! ```
//!
//! Only hashes are on disk: reading the file does not reveal a token. A
//! presented token is hashed and compared with every entry in constant
//! time. [`parse`] is pure (text in, table out) so a fuzz target can drive
//! it directly.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Role;
use crate::domain::ActorId;

/// Longest principal accepted (the same bound as an actor id, which a
/// principal becomes).
const MAX_PRINCIPAL_CHARS: usize = 255;

/// A parsed token file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenFile {
    tokens: Vec<TokenEntry>,
    certificates: Vec<(String, Role)>,
}

/// One `[[token]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub principal: String,
    pub role: Role,
    sha256: [u8; 32],
}

/// Why a token file cannot be used. The message names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenFileError(String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    token: Vec<RawToken>,
    #[serde(default)]
    certificate: Vec<RawCertificate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    principal: String,
    role: String,
    sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    principal: String,
    role: String,
}

fn principal(s: &str, at: &str) -> Result<String, TokenFileError> {
    let p = s.trim();
    if p.is_empty() {
        return Err(TokenFileError(format!("{at}: principal is empty")));
    }
    if p.chars().count() > MAX_PRINCIPAL_CHARS {
        return Err(TokenFileError(format!(
            "{at}: principal is longer than {MAX_PRINCIPAL_CHARS} characters"
        )));
    }
    if p == ActorId::SYSTEM {
        return Err(TokenFileError(format!(
            "{at}: principal {p:?} is reserved for central-manager itself"
        )));
    }
    Ok(p.to_owned())
}

fn role(s: &str, at: &str) -> Result<Role, TokenFileError> {
    Role::parse(s).ok_or_else(|| {
        TokenFileError(format!(
            "{at}: role {s:?} is not one of reader, operator, admin"
        ))
    })
}

/// Parses the text of a token file.
pub fn parse(text: &str) -> Result<TokenFile, TokenFileError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| TokenFileError(e.to_string()))?;
    let mut tokens: Vec<TokenEntry> = Vec::with_capacity(raw.token.len());
    for (i, t) in raw.token.iter().enumerate() {
        let at = format!("token #{}", i + 1);
        let bytes = hex::decode(t.sha256.trim())
            .map_err(|_| TokenFileError(format!("{at}: sha256 must be 64 hexadecimal digits")))?;
        let sha256: [u8; 32] = bytes
            .try_into()
            .map_err(|_| TokenFileError(format!("{at}: sha256 must be 64 hexadecimal digits")))?;
        if let Some(j) = tokens.iter().position(|e| e.sha256 == sha256) {
            // Which principal would it be? Refuse rather than guess.
            return Err(TokenFileError(format!(
                "{at}: the same token hash as token #{}",
                j + 1
            )));
        }
        tokens.push(TokenEntry {
            principal: principal(&t.principal, &at)?,
            role: role(&t.role, &at)?,
            sha256,
        });
    }
    let mut certificates: Vec<(String, Role)> = Vec::with_capacity(raw.certificate.len());
    for (i, c) in raw.certificate.iter().enumerate() {
        let at = format!("certificate #{}", i + 1);
        let p = principal(&c.principal, &at)?;
        if certificates.iter().any(|(q, _)| *q == p) {
            return Err(TokenFileError(format!(
                "{at}: principal {p:?} is listed twice"
            )));
        }
        certificates.push((p, role(&c.role, &at)?));
    }
    Ok(TokenFile {
        tokens,
        certificates,
    })
}

/// The hex SHA-256 of a token: what goes into the file.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl TokenFile {
    /// The entry of `token`, if any. Every entry is compared, each in
    /// constant time, so the time taken says nothing about the hashes.
    pub fn lookup(&self, token: &str) -> Option<&TokenEntry> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for e in &self.tokens {
            if bool::from(e.sha256.ct_eq(&digest)) {
                found = Some(e);
            }
        }
        found
    }

    /// The role of a client-certificate principal: its `[[certificate]]`
    /// entry, else operator.
    pub fn certificate_role(&self, principal: &str) -> Role {
        self.certificates
            .iter()
            .find(|(p, _)| p == principal)
            .map_or(Role::Operator, |(_, r)| *r)
    }

    /// How many tokens the file holds (for the reload log).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether it holds no token.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entries: &[(&str, &str, &str)]) -> String {
        entries
            .iter()
            .map(|(p, r, t)| {
                format!(
                    "[[token]]\nprincipal = \"{p}\"\nrole = \"{r}\"\nsha256 = \"{}\"\n",
                    token_hash(t)
                )
            })
            .collect()
    }

    #[test]
    fn tokens_are_found_by_their_hash_only() {
        let f = parse(&file(&[
            ("alice", "operator", "tok-a"),
            ("bob", "reader", "tok-b"),
            ("root", "admin", "tok-r"),
        ]))
        .unwrap();
        assert_eq!(f.len(), 3);
        let a = f.lookup("tok-a").unwrap();
        assert_eq!((a.principal.as_str(), a.role), ("alice", Role::Operator));
        assert_eq!(f.lookup("tok-b").unwrap().role, Role::Reader);
        assert_eq!(f.lookup("tok-r").unwrap().role, Role::Admin);
        assert!(f.lookup("tok-").is_none());
        assert!(f.lookup("").is_none());
        // The file holds the hash, so the hash itself is not a token.
        assert!(f.lookup(&token_hash("tok-a")).is_none());
    }

    #[test]
    fn certificate_roles_default_to_operator() {
        let f = parse(
            "[[certificate]]\nprincipal = \"ci-bot\"\nrole = \"reader\"\n\
             [[certificate]]\nprincipal = \"ops\"\nrole = \"admin\"\n",
        )
        .unwrap();
        assert_eq!(f.certificate_role("ci-bot"), Role::Reader);
        assert_eq!(f.certificate_role("ops"), Role::Admin);
        assert_eq!(f.certificate_role("anyone"), Role::Operator);
        assert!(f.is_empty());
        assert_eq!(parse("").unwrap(), TokenFile::default());
    }

    #[test]
    fn bad_files_name_the_problem() {
        let h = token_hash("x");
        let bad = |text: &str, needle: &str| {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{e:?} should mention {needle:?}");
        };
        bad(
            "[[token]]\nprincipal = \"a\"\nrole = \"operator\"\n",
            "sha256",
        );
        bad(
            "[[token]]\nprincipal = \"a\"\nrole = \"operator\"\nsha256 = \"abc\"\n",
            "64 hexadecimal",
        );
        bad(
            &format!("[[token]]\nprincipal = \"a\"\nrole = \"root\"\nsha256 = \"{h}\"\n"),
            "reader, operator, admin",
        );
        bad(
            &format!("[[token]]\nprincipal = \" \"\nrole = \"admin\"\nsha256 = \"{h}\"\n"),
            "principal is empty",
        );
        bad(
            &format!("[[token]]\nprincipal = \"system\"\nrole = \"admin\"\nsha256 = \"{h}\"\n"),
            "reserved",
        );
        bad(
            &file(&[("a", "admin", "same"), ("b", "reader", "same")]),
            "token #1",
        );
        bad(
            &format!(
                "[[token]]\nprincipal = \"a\"\nrole = \"admin\"\nsha256 = \"{h}\"\ntoken = \"x\"\n"
            ),
            "unknown field",
        );
        bad(
            "[[certificate]]\nprincipal = \"a\"\nrole = \"reader\"\n[[certificate]]\nprincipal = \"a\"\nrole = \"admin\"\n",
            "twice",
        );
        bad("not toml at all [", "");
    }
}
