//! The SASL server for clients (PLAIN, SCRAM-SHA-256/512): a mechanism
//! chosen by the first byte, then tokens separated by 0xff bytes. Only the
//! right password logs in; nothing a client sends panics it.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use kafka_lfs_proxy::kafka::auth::credentials::{Credentials, CredentialsFile};
use kafka_lfs_proxy::kafka::auth::sasl_server::{ClientLogin, Step};
use kafka_lfs_proxy::kafka::auth::scram::ScramHash;
use libfuzzer_sys::fuzz_target;

fn credentials() -> Arc<Credentials> {
    static CREDENTIALS: OnceLock<Arc<Credentials>> = OnceLock::new();
    Arc::clone(CREDENTIALS.get_or_init(|| {
        let mut file = CredentialsFile::default();
        file.set("alice", ScramHash::Sha256, "s3cret", 4096)
            .unwrap();
        file.set("alice", ScramHash::Sha512, "s3cret", 4096)
            .unwrap();
        Arc::new(file.decode(Path::new("fuzz")).unwrap())
    }))
}

const MECHANISMS: [&str; 5] = [
    "PLAIN",
    "SCRAM-SHA-256",
    "SCRAM-SHA-512",
    "GSSAPI",
    "scram-sha-256",
];

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let mut login = ClientLogin::new(credentials());
    let _ = login.handshake(MECHANISMS[*first as usize % MECHANISMS.len()]);
    for token in rest.split(|b| *b == 0xff).take(4) {
        match login.authenticate(token) {
            Step::Continue(_) => {}
            Step::Done { user, .. } => assert_eq!(user, "alice"),
            Step::Failed(_) => break,
        }
    }
});
