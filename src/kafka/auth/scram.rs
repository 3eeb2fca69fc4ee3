//! The client side of SCRAM (RFC 5802, RFC 7677) as Kafka uses it for
//! SCRAM-SHA-256 and SCRAM-SHA-512: no channel binding (`n,,`), no SASLprep
//! (Kafka's own clients send the password's UTF-8 bytes as they are).
//!
//! ```text
//! client-first  n,,n=<user>,r=<client nonce>
//! server-first  r=<client nonce + server nonce>,s=<salt b64>,i=<iterations>
//! client-final  c=biws,r=<nonce>,p=<proof b64>
//! server-final  v=<server signature b64>   (or e=<error>)
//! ```
//! The server's signature is checked, so a server that does not know the
//! password cannot pass itself off as the broker.

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// Iteration counts above this are refused (a hostile server could
/// otherwise make the proxy spin); Kafka allows 4096 to 16384.
const MAX_ITERATIONS: u32 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha256 => hmac::HMAC_SHA256,
            ScramHash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramHash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha256 => &digest::SHA256,
            ScramHash::Sha512 => &digest::SHA512,
        }
    }

    fn len(self) -> usize {
        match self {
            ScramHash::Sha256 => 32,
            ScramHash::Sha512 => 64,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed server message: {0}")]
    Malformed(&'static str),
    #[error("server nonce does not extend the client nonce")]
    Nonce,
    #[error("server refused: {0}")]
    Server(String),
    #[error("server signature does not match: the server does not know the password")]
    ServerSignature,
}

/// What a server keeps for a user instead of the password (RFC 5802):
/// `StoredKey = H(HMAC(SaltedPassword, "Client Key"))`,
/// `ServerKey = HMAC(SaltedPassword, "Server Key")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramHash {
    /// Derives the keys a server stores for `password`.
    pub fn keys(
        self,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<ScramKeys, ScramError> {
        let salted = self.salted_password(password.as_bytes(), salt, iterations)?;
        let client_key = hmac(self.hmac(), &salted, b"Client Key");
        Ok(ScramKeys {
            salt: salt.to_vec(),
            iterations,
            stored_key: digest::digest(self.digest(), &client_key).as_ref().to_vec(),
            server_key: hmac(self.hmac(), &salted, b"Server Key"),
        })
    }

    fn salted_password(
        self,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<Vec<u8>, ScramError> {
        let iterations = std::num::NonZeroU32::new(iterations)
            .filter(|i| i.get() <= MAX_ITERATIONS)
            .ok_or(ScramError::Malformed("iteration count out of range"))?;
        let mut salted = vec![0u8; self.len()];
        pbkdf2::derive(self.pbkdf2(), iterations, salt, password, &mut salted);
        Ok(salted)
    }

    pub fn hmac_sign(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac(self.hmac(), key, data)
    }

    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), data).as_ref().to_vec()
    }
}

/// One SCRAM exchange, from the client's side.
pub struct ScramClient {
    hash: ScramHash,
    password: Vec<u8>,
    nonce: String,
    client_first_bare: String,
}

fn hmac(alg: hmac::Algorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(alg, key), data)
        .as_ref()
        .to_vec()
}

/// `=` and `,` are escaped in SCRAM user names.
fn sasl_name(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    /// `nonce` must be fresh and random for every exchange.
    pub fn new(hash: ScramHash, username: &str, password: &str, nonce: String) -> Self {
        let client_first_bare = format!("n={},r={nonce}", sasl_name(username));
        ScramClient {
            hash,
            password: password.as_bytes().to_vec(),
            nonce,
            client_first_bare,
        }
    }

    /// A nonce of 32 random bytes, base64 (no `,`).
    pub fn random_nonce() -> String {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator works");
        B64.encode(bytes)
    }

    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Answers the server's first message; returns the client-final message
    /// and the server signature the server-final message must carry.
    pub fn client_final(&self, server_first: &str) -> Result<(String, Vec<u8>), ScramError> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attribute in server_first.split(',') {
            match attribute.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("m", _)) => return Err(ScramError::Malformed("unsupported extension")),
                Some(("e", v)) => return Err(ScramError::Server(v.to_owned())),
                _ => {}
            }
        }
        let nonce = nonce.ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = B64
            .decode(salt.ok_or(ScramError::Malformed("no salt"))?)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations: u32 = iterations
            .ok_or(ScramError::Malformed("no iteration count"))?
            .parse()
            .map_err(|_| ScramError::Malformed("iteration count is not a number"))?;
        let salted = self
            .hash
            .salted_password(&self.password, &salt, iterations)?;
        let client_key = hmac(self.hash.hmac(), &salted, b"Client Key");
        let stored_key = digest::digest(self.hash.digest(), &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac(
            self.hash.hmac(),
            stored_key.as_ref(),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(self.hash.hmac(), &salted, b"Server Key");
        let server_signature = hmac(self.hash.hmac(), &server_key, auth_message.as_bytes());
        Ok((
            format!("{without_proof},p={}", B64.encode(proof)),
            server_signature,
        ))
    }

    /// Checks the server-final message against the expected signature.
    pub fn verify_server_final(server_final: &str, expected: &[u8]) -> Result<(), ScramError> {
        if let Some(error) = server_final.strip_prefix("e=") {
            return Err(ScramError::Server(error.to_owned()));
        }
        let signature = server_final
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or(ScramError::Malformed("no server signature"))?;
        let signature = B64
            .decode(signature)
            .map_err(|_| ScramError::Malformed("server signature is not base64"))?;
        if aws_lc_rs::constant_time::verify_slices_are_equal(&signature, expected).is_ok() {
            Ok(())
        } else {
            Err(ScramError::ServerSignature)
        }
    }
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("hash", &self.hash)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SCRAM-SHA-256 example of RFC 7677, section 3.
    #[test]
    fn rfc7677_example() {
        let client = ScramClient::new(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(client.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let (client_final, signature) = client.client_final(server_first).unwrap();
        assert_eq!(
            client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        ScramClient::verify_server_final(
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
            &signature,
        )
        .unwrap();
        assert_eq!(
            ScramClient::verify_server_final(
                "v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
                &signature
            ),
            Err(ScramError::ServerSignature)
        );
    }

    #[test]
    fn hostile_server_messages_are_refused() {
        let client = ScramClient::new(ScramHash::Sha512, "a=b,c", "p", "abc".into());
        assert_eq!(client.client_first(), "n,,n=a=3Db=2Cc,r=abc");
        for (msg, err) in [
            ("r=xyz,s=AAAA,i=4096", ScramError::Nonce),
            ("r=abc,s=AAAA,i=4096", ScramError::Nonce),
            (
                "r=abcd,s=AAAA,i=0",
                ScramError::Malformed("iteration count out of range"),
            ),
            (
                "r=abcd,s=AAAA,i=99999999",
                ScramError::Malformed("iteration count out of range"),
            ),
            (
                "r=abcd,s=@@,i=4096",
                ScramError::Malformed("salt is not base64"),
            ),
            ("e=unknown-user", ScramError::Server("unknown-user".into())),
        ] {
            assert_eq!(client.client_final(msg).unwrap_err(), err, "{msg}");
        }
    }
}
