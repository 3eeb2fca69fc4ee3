//! Verifying a client's SASL login when the proxy terminates SASL:
//! PLAIN and SCRAM-SHA-256/512 (RFC 5802) against the credentials file,
//! which holds salted SCRAM keys only. A PLAIN password is checked by
//! deriving the stored key from it with the user's salt.
//!
//! An unknown user goes through the same steps as a known one and fails at
//! the same point with the same message, so the answers do not tell which
//! user names exist.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::kafka::auth::credentials::Credentials;
use crate::kafka::auth::sasl::Mechanism;
use crate::kafka::auth::scram::{ScramHash, ScramKeys};

/// The mechanisms a terminating proxy offers.
pub const OFFERED: [Mechanism; 3] = [
    Mechanism::ScramSha512,
    Mechanism::ScramSha256,
    Mechanism::Plain,
];

const FAILED: &str = "Authentication failed: invalid credentials";

/// One client connection's login.
pub struct ClientLogin {
    credentials: Arc<Credentials>,
    state: State,
}

enum State {
    Anonymous,
    Mechanism(Mechanism),
    ScramSent {
        hash: ScramHash,
        user: String,
        keys: Option<ScramKeys>,
        nonce: String,
        /// client-first-bare + "," + server-first
        auth_prefix: String,
    },
    Authenticated(String),
}

/// What to answer a SaslAuthenticate with.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes; the exchange goes on.
    Continue(Vec<u8>),
    /// Logged in as `user`; send these bytes.
    Done { user: String, reply: Vec<u8> },
    /// Refused: answer SASL_AUTHENTICATION_FAILED with this message and close.
    Failed(String),
}

impl ClientLogin {
    pub fn new(credentials: Arc<Credentials>) -> Self {
        ClientLogin {
            credentials,
            state: State::Anonymous,
        }
    }

    pub fn user(&self) -> Option<&str> {
        match &self.state {
            State::Authenticated(user) => Some(user),
            _ => None,
        }
    }

    /// SaslHandshake: picks the mechanism, or returns the offered names.
    /// A logged-in client may start again (re-authentication, KIP-368).
    pub fn handshake(&mut self, mechanism: &str) -> Result<(), Vec<&'static str>> {
        match Mechanism::parse(mechanism).filter(|m| OFFERED.contains(m)) {
            Some(m) if m.name() == mechanism => {
                self.state = State::Mechanism(m);
                Ok(())
            }
            _ => Err(OFFERED.iter().map(|m| m.name()).collect()),
        }
    }

    /// One SaslAuthenticate token.
    pub fn authenticate(&mut self, token: &[u8]) -> Step {
        let state = std::mem::replace(&mut self.state, State::Anonymous);
        let step = match state {
            State::Mechanism(Mechanism::Plain) => self.plain(token),
            State::Mechanism(Mechanism::ScramSha256) => self.scram_first(ScramHash::Sha256, token),
            State::Mechanism(Mechanism::ScramSha512) => self.scram_first(ScramHash::Sha512, token),
            State::ScramSent {
                hash,
                user,
                keys,
                nonce,
                auth_prefix,
            } => scram_final(hash, &user, keys.as_ref(), &nonce, &auth_prefix, token),
            State::Anonymous | State::Authenticated(_) => {
                Step::Failed("SaslAuthenticate before SaslHandshake".into())
            }
        };
        if let Step::Done { user, .. } = &step {
            self.state = State::Authenticated(user.clone());
        }
        step
    }

    fn plain(&mut self, token: &[u8]) -> Step {
        let mut parts = token.split(|b| *b == 0);
        let (Some(authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Step::Failed("malformed PLAIN token".into());
        };
        let (Ok(authzid), Ok(user), Ok(password)) = (
            std::str::from_utf8(authzid),
            std::str::from_utf8(user),
            std::str::from_utf8(password),
        ) else {
            return Step::Failed(FAILED.into());
        };
        if !authzid.is_empty() && authzid != user {
            return Step::Failed("PLAIN authorization id must be empty or the user".into());
        }
        let Some((hash, keys)) = self.credentials.any_keys(user) else {
            return Step::Failed(FAILED.into());
        };
        match hash.keys(password, &keys.salt, keys.iterations) {
            Ok(derived) if constant_eq(&derived.stored_key, &keys.stored_key) => Step::Done {
                user: user.to_owned(),
                reply: Vec::new(),
            },
            _ => Step::Failed(FAILED.into()),
        }
    }

    fn scram_first(&mut self, hash: ScramHash, token: &[u8]) -> Step {
        let Ok(message) = std::str::from_utf8(token) else {
            return Step::Failed("malformed SCRAM message".into());
        };
        let Some(bare) = message
            .strip_prefix("n,,")
            .or_else(|| message.strip_prefix("y,,"))
        else {
            return Step::Failed(
                "SCRAM channel binding and authorization ids are not supported".into(),
            );
        };
        let mut user = None;
        let mut client_nonce = None;
        for attribute in bare.split(',') {
            match attribute.split_once('=') {
                Some(("n", v)) => user = Some(v.replace("=2C", ",").replace("=3D", "=")),
                Some(("r", v)) => client_nonce = Some(v),
                Some(("tokenauth", _)) => {
                    return Step::Failed("delegation tokens are not supported".into())
                }
                _ => {}
            }
        }
        let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
            return Step::Failed("malformed SCRAM client-first message".into());
        };
        let keys = self.credentials.keys(&user, hash).cloned();
        // An unknown user gets a salt derived from its name: the same every
        // time, like a real one, and the exchange fails only at the end.
        let (salt, iterations) = match &keys {
            Some(k) => (k.salt.clone(), k.iterations),
            None => (
                hash.hash(format!("unknown-user:{user}").as_bytes())[..16].to_vec(),
                4096,
            ),
        };
        let nonce = format!(
            "{client_nonce}{}",
            crate::kafka::auth::scram::ScramClient::random_nonce()
        );
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        self.state = State::ScramSent {
            hash,
            user,
            keys,
            nonce,
            auth_prefix: format!("{bare},{server_first}"),
        };
        Step::Continue(server_first.into_bytes())
    }
}

fn scram_final(
    hash: ScramHash,
    user: &str,
    keys: Option<&ScramKeys>,
    nonce: &str,
    auth_prefix: &str,
    token: &[u8],
) -> Step {
    let Ok(message) = std::str::from_utf8(token) else {
        return Step::Failed("malformed SCRAM message".into());
    };
    let Some((without_proof, proof)) = message.rsplit_once(",p=") else {
        return Step::Failed("malformed SCRAM client-final message".into());
    };
    let mut binding_ok = false;
    let mut nonce_ok = false;
    for attribute in without_proof.split(',') {
        match attribute.split_once('=') {
            Some(("c", v)) => binding_ok = v == "biws" || v == "eSws",
            Some(("r", v)) => nonce_ok = v == nonce,
            _ => {}
        }
    }
    if !binding_ok || !nonce_ok {
        return Step::Failed("SCRAM nonce or channel binding does not match".into());
    }
    let Ok(proof) = B64.decode(proof) else {
        return Step::Failed("malformed SCRAM proof".into());
    };
    let Some(keys) = keys else {
        return Step::Failed(FAILED.into());
    };
    let auth_message = format!("{auth_prefix},{without_proof}");
    let signature = hash.hmac_sign(&keys.stored_key, auth_message.as_bytes());
    if proof.len() != signature.len() {
        return Step::Failed(FAILED.into());
    }
    let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
    if !constant_eq(&hash.hash(&client_key), &keys.stored_key) {
        return Step::Failed(FAILED.into());
    }
    let server_signature = hash.hmac_sign(&keys.server_key, auth_message.as_bytes());
    Step::Done {
        user: user.to_owned(),
        reply: format!("v={}", B64.encode(server_signature)).into_bytes(),
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::auth::credentials::CredentialsFile;
    use crate::kafka::auth::scram::ScramClient;

    fn login() -> ClientLogin {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let mut file = CredentialsFile::default();
        file.set("alice", ScramHash::Sha256, "pw-a", 4096).unwrap();
        file.set("alice", ScramHash::Sha512, "pw-a", 4096).unwrap();
        file.write(&path).unwrap();
        ClientLogin::new(Arc::new(Credentials::load(&path).unwrap()))
    }

    /// Our SCRAM client against our SCRAM server (the e2e suite checks both
    /// against independent implementations: scramp and librdkafka).
    fn scram_round(hash: ScramHash, mech: &str, user: &str, password: &str) -> Step {
        let mut server = login();
        server.handshake(mech).unwrap();
        let client = ScramClient::new(hash, user, password, ScramClient::random_nonce());
        let Step::Continue(first) = server.authenticate(client.client_first().as_bytes()) else {
            panic!("server-first expected");
        };
        let (last, signature) = client
            .client_final(std::str::from_utf8(&first).unwrap())
            .unwrap();
        let step = server.authenticate(last.as_bytes());
        if let Step::Done { reply, .. } = &step {
            ScramClient::verify_server_final(std::str::from_utf8(reply).unwrap(), &signature)
                .unwrap();
            assert_eq!(server.user(), Some(user));
        }
        step
    }

    #[test]
    fn scram_logins() {
        for (hash, mech) in [
            (ScramHash::Sha256, "SCRAM-SHA-256"),
            (ScramHash::Sha512, "SCRAM-SHA-512"),
        ] {
            assert!(matches!(
                scram_round(hash, mech, "alice", "pw-a"),
                Step::Done { .. }
            ));
            assert_eq!(
                scram_round(hash, mech, "alice", "wrong"),
                Step::Failed(FAILED.into())
            );
            assert_eq!(
                scram_round(hash, mech, "mallory", "pw-a"),
                Step::Failed(FAILED.into())
            );
        }
    }

    #[test]
    fn plain_logins_and_protocol_errors() {
        let mut server = login();
        server.handshake("PLAIN").unwrap();
        assert!(matches!(
            server.authenticate(b"\0alice\0pw-a"),
            Step::Done { .. }
        ));
        let mut server = login();
        server.handshake("PLAIN").unwrap();
        assert_eq!(
            server.authenticate(b"\0alice\0nope"),
            Step::Failed(FAILED.into())
        );
        let mut server = login();
        assert!(server.handshake("GSSAPI").is_err());
        assert!(
            server.handshake("scram-sha-256").is_err(),
            "mechanism names are exact"
        );
        assert!(matches!(server.authenticate(b"x"), Step::Failed(_)));
        server.handshake("SCRAM-SHA-256").unwrap();
        assert!(matches!(
            server.authenticate(b"p=tls-unique,,n=alice,r=x"),
            Step::Failed(_)
        ));
    }
}
