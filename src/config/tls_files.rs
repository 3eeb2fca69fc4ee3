//! The TLS file group a server side needs (Kafka listeners, HTTP API):
//! certificate chain, private key, optionally a client CA for mTLS. One
//! check and one typed value for both, so the rule is written once: with
//! TLS enabled, certificate and key are required; a client CA makes client
//! certificates required unless told otherwise.

use std::path::PathBuf;

use super::values::SettingError;

/// The setting names of one TLS file group, for messages.
pub struct TlsNames {
    pub enabled: &'static str,
    pub cert: &'static str,
    pub key: &'static str,
    pub ca: &'static str,
}

/// A server's TLS files, checked.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub names: &'static TlsNames,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub require_client_cert: bool,
}

impl std::fmt::Debug for TlsNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.enabled)
    }
}

impl ServerTlsFiles {
    /// `None` when TLS is off; an error naming the missing setting when it
    /// is on without a certificate or key.
    pub fn from_settings(
        names: &'static TlsNames,
        enabled: bool,
        cert: Option<&PathBuf>,
        key: Option<&PathBuf>,
        client_ca: Option<&PathBuf>,
        require_client_cert: Option<bool>,
    ) -> Result<Option<Self>, SettingError> {
        if !enabled {
            return Ok(None);
        }
        let required = |name: &'static str| SettingError {
            name,
            reason: format!("required when {}=true", names.enabled),
        };
        let cert = cert.ok_or_else(|| required(names.cert))?;
        let key = key.ok_or_else(|| required(names.key))?;
        Ok(Some(ServerTlsFiles {
            names,
            cert: cert.clone(),
            key: key.clone(),
            client_ca: client_ca.cloned(),
            require_client_cert: require_client_cert.unwrap_or(client_ca.is_some()),
        }))
    }
}
