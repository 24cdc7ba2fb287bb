//! The client side of token authentication: every call carries
//! `authorization: Bearer <token>`.

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::{Request, Status};

/// A tonic interceptor adding the bearer token (or nothing when `None`).
#[derive(Clone, Default)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_tuple("BearerToken")
            .field(&self.0.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl BearerToken {
    /// A token to send; an error when it cannot be a header value (it must
    /// be visible ASCII).
    pub fn new(token: &str) -> Result<Self, String> {
        let token = token.trim();
        if token.is_empty() {
            return Err("the token is empty".into());
        }
        MetadataValue::try_from(format!("Bearer {token}"))
            .map(|v| Self(Some(v)))
            .map_err(|_| "the token must be printable ASCII".into())
    }

    /// Sends no token.
    pub fn none() -> Self {
        Self(None)
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn adds_the_header_and_hides_the_token() {
        let mut t = BearerToken::new(" s3cret ").unwrap();
        let r = t.call(Request::new(())).unwrap();
        assert_eq!(r.metadata().get("authorization").unwrap(), "Bearer s3cret");
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(BearerToken::new("").is_err());
        assert!(BearerToken::new("a\nb").is_err());
        let r = BearerToken::none().call(Request::new(())).unwrap();
        assert!(r.metadata().get("authorization").is_none());
    }
}
