//! Bearer JWTs as an alternative to API keys (as Zilla's jwt guard).
//!
//! One verification key: a PEM public key (RSA → RS256/384/512 and PS*,
//! EC → ES256/384, Ed25519 → EdDSA) or an HMAC secret (HS256/384/512).
//! The token's `alg` must be of the key's family, so a public key can
//! never be used as an HMAC secret. `exp` is required; `nbf`, issuer
//! and audience are checked when configured, with 30 s of clock leeway.

use std::collections::HashSet;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum JwtSetupError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an RSA, EC or Ed25519 public key in PEM")]
    NotAKey { path: String },
}

/// What a verified token says about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub issuer: Option<String>,
    pub subject: Option<String>,
    /// `exp`: when the token expires (seconds since the Unix epoch).
    pub expires_at: u64,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    /// A NumericDate may have a fraction.
    exp: f64,
}

pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    /// A verifier for a PEM public key file.
    pub fn from_public_key_file(path: &Path) -> Result<Self, JwtSetupError> {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| JwtSetupError::Read {
            path: shown.clone(),
            source,
        })?;
        let key = DecodingKey::from_rsa_pem(&pem)
            .or_else(|_| DecodingKey::from_ec_pem(&pem))
            .or_else(|_| DecodingKey::from_ed_pem(&pem))
            .map_err(|_| JwtSetupError::NotAKey { path: shown })?;
        Ok(Self::with_key(key))
    }

    /// A verifier for an HMAC shared secret.
    pub fn from_secret(secret: &[u8]) -> Self {
        Self::with_key(DecodingKey::from_secret(secret))
    }

    fn with_key(key: DecodingKey) -> Self {
        let mut validation = Validation::new_for_family(key.family());
        validation.leeway = 30;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        JwtVerifier { key, validation }
    }

    /// Requires `iss` to be one of these.
    pub fn require_issuer(mut self, issuers: &[String]) -> Self {
        if !issuers.is_empty() {
            self.validation.set_issuer(issuers);
        }
        self
    }

    /// Requires `aud` to include one of these.
    pub fn require_audience(mut self, audiences: &[String]) -> Self {
        if !audiences.is_empty() {
            self.validation.set_audience(audiences);
            self.validation.validate_aud = true;
        }
        self
    }

    /// The algorithms a token may use.
    pub fn algorithms(&self) -> HashSet<Algorithm> {
        self.validation.algorithms.iter().copied().collect()
    }

    /// Verifies a compact JWS token.
    pub fn verify(&self, token: &str) -> Result<Identity, jsonwebtoken::errors::Error> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)?;
        Ok(Identity {
            issuer: data.claims.iss,
            subject: data.claims.sub,
            expires_at: data.claims.exp.max(0.0) as u64,
        })
    }
}

/// Whether a bearer token is shaped like a JWT (three dot-separated parts).
pub fn looks_like_jwt(token: &[u8]) -> bool {
    token.iter().filter(|b| **b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs256(secret: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn hmac_tokens_are_checked_for_signature_expiry_issuer_and_audience() {
        let v = JwtVerifier::from_secret(b"s3cret")
            .require_issuer(&["idp".to_owned()])
            .require_audience(&["proxy".to_owned()]);
        let exp = now() + 60;
        let good = json!({"sub": "alice", "iss": "idp", "aud": "proxy", "exp": exp});
        assert_eq!(
            v.verify(&hs256(b"s3cret", good.clone())).unwrap(),
            Identity {
                issuer: Some("idp".into()),
                subject: Some("alice".into()),
                expires_at: exp,
            }
        );
        assert!(v.verify(&hs256(b"other", good)).is_err(), "wrong key");
        let expired = json!({"sub": "a", "iss": "idp", "aud": "proxy", "exp": now() - 120});
        assert!(v.verify(&hs256(b"s3cret", expired)).is_err());
        let no_exp = json!({"sub": "a", "iss": "idp", "aud": "proxy"});
        assert!(v.verify(&hs256(b"s3cret", no_exp)).is_err());
        let wrong_iss = json!({"sub": "a", "iss": "evil", "aud": "proxy", "exp": now() + 60});
        assert!(v.verify(&hs256(b"s3cret", wrong_iss)).is_err());
        let wrong_aud = json!({"sub": "a", "iss": "idp", "aud": "else", "exp": now() + 60});
        assert!(v.verify(&hs256(b"s3cret", wrong_aud)).is_err());
        let not_yet = json!({"sub": "a", "iss": "idp", "aud": "proxy", "exp": now() + 600, "nbf": now() + 300});
        assert!(v.verify(&hs256(b"s3cret", not_yet)).is_err());
    }

    #[test]
    fn ec_public_key_verifies_es256_and_refuses_hmac_with_the_key_bytes() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pub.pem");
        std::fs::write(&path, pair.public_key_pem()).unwrap();
        let v = JwtVerifier::from_public_key_file(&path).unwrap();
        let claims = json!({"sub": "svc", "exp": now() + 60});
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&token).unwrap().subject.as_deref(), Some("svc"));
        // The classic confusion: an HS256 token "signed" with the public key.
        let forged = hs256(pair.public_key_pem().as_bytes(), claims);
        assert!(v.verify(&forged).is_err());
        assert!(!v.algorithms().contains(&Algorithm::HS256));
    }

    #[test]
    fn a_file_without_a_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.pem");
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            JwtVerifier::from_public_key_file(&path),
            Err(JwtSetupError::NotAKey { .. })
        ));
        assert!(looks_like_jwt(b"a.b.c") && !looks_like_jwt(b"plain-api-key"));
    }
}
