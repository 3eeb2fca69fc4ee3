//! The running parts that several entry points build from settings groups:
//! object storage, upstream security, TLS acceptors, the JWT verifier, the
//! proxy's own Kafka cluster connections.

use std::sync::Arc;

use crate::config::{
    HttpSettings, ServerTlsFiles, SettingError, StorageSettings, UpstreamSettings,
};
use crate::http::jwt::JwtVerifier;
use crate::kafka::auth::sasl::SaslCredentials;
use crate::kafka::client::cluster::Cluster;
use crate::kafka::client::producer::Producer;
use crate::kafka::relay::upstream::{UpstreamSecurity, UpstreamTls};
use crate::lfs::store::{BlobStore, S3Settings};
use crate::lfs::{Lfs, TopicFilter};
use crate::tls::{self, TlsSetupError};

/// The LFS offload's storage and rules (S3 or the local directory).
pub fn lfs(storage: &StorageSettings) -> Result<Lfs, SettingError> {
    let store = match &storage.s3_bucket {
        Some(bucket) => BlobStore::s3(
            &S3Settings {
                bucket: bucket.clone(),
                region: storage.s3_region.clone(),
                endpoint: storage.s3_endpoint.clone(),
                force_path_style: storage.s3_force_path_style,
                access_key: storage.s3_access_key.clone(),
                secret_key: storage
                    .s3_secret_key
                    .as_ref()
                    .map(|s| s.expose().to_owned()),
                session_token: storage
                    .s3_session_token
                    .as_ref()
                    .map(|s| s.expose().to_owned()),
                public_endpoint: storage.s3_public_endpoint.clone(),
                timeout: Some(std::time::Duration::from_millis(storage.s3_timeout_ms)),
                idle_timeout: Some(std::time::Duration::from_millis(storage.s3_idle_timeout_ms)),
            },
            storage.chunk_size,
        )
        .map_err(|e| SettingError {
            name: "KAFSCALE_LFS_PROXY_S3_BUCKET",
            reason: e.to_string(),
        })
        .inspect(|store| {
            // Where leftovers are recorded when S3 refuses them at shutdown.
            store
                .cleanup()
                .set_fallback_dir(storage.storage_dir.clone())
        })?,
        None => BlobStore::local(&storage.storage_dir, storage.chunk_size).map_err(|e| {
            SettingError {
                name: "KAFSCALE_LFS_PROXY_STORAGE_DIR",
                reason: e.to_string(),
            }
        })?,
    };
    Ok(Lfs {
        store,
        namespace: storage.s3_namespace.clone(),
        proxy_id: storage.proxy_id(),
        max_blob_size: storage.max_blob_size,
        default_alg: storage.checksum_alg()?,
        topics: TopicFilter::new(Some(storage.topics())),
        content_addressed: storage.content_addressed_keys,
    })
}

/// TLS and SASL for upstream connections, files read now so a missing
/// one stops start-up naming its setting.
pub fn upstream_security(upstream: &UpstreamSettings) -> Result<UpstreamSecurity, TlsSetupError> {
    let tls = if upstream.backend_tls_enabled {
        let names = tls::SettingNames {
            cert: "KAFSCALE_LFS_PROXY_BACKEND_TLS_CERT_FILE",
            key: "KAFSCALE_LFS_PROXY_BACKEND_TLS_KEY_FILE",
            ca: "KAFSCALE_LFS_PROXY_BACKEND_TLS_CA_FILE",
        };
        let client_cert = upstream
            .backend_tls_cert_file
            .as_deref()
            .zip(upstream.backend_tls_key_file.as_deref());
        let config =
            tls::client_config(&names, upstream.backend_tls_ca_file.as_deref(), client_cert)?;
        Some(UpstreamTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name: upstream
                .backend_tls_server_name
                .clone()
                .filter(|n| !n.trim().is_empty()),
        })
    } else {
        None
    };
    let sasl = upstream.sasl_mechanism().map(|mechanism| SaslCredentials {
        mechanism,
        username: upstream.backend_sasl_username.clone().unwrap_or_default(),
        password: upstream
            .backend_sasl_password
            .as_ref()
            .map(|s| s.expose().to_owned())
            .unwrap_or_default(),
    });
    Ok(UpstreamSecurity {
        tls,
        sasl,
        max_frame_size: upstream.max_frame_size,
    })
}

/// A server's TLS acceptor from its checked files, offering `alpn`.
pub fn server_tls(
    files: &ServerTlsFiles,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::TlsAcceptor, TlsSetupError> {
    let names = tls::SettingNames {
        cert: files.names.cert,
        key: files.names.key,
        ca: files.names.ca,
    };
    let mut config = tls::server_config(
        &names,
        &files.cert,
        &files.key,
        files.client_ca.as_deref(),
        files.require_client_cert,
    )?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A `Cluster` for one of the proxy's own Kafka clients (the HTTP
/// producer, the reply listener, the processor's consumers).
pub fn own_cluster(upstream: &UpstreamSettings, security: &Arc<UpstreamSecurity>) -> Cluster {
    Cluster::new(
        Arc::clone(security),
        upstream.bootstrap(),
        upstream.connect_timeout(),
        upstream.request_timeout(),
        upstream.max_frame_size,
    )
}

/// A producer of the proxy's own records, on its own connections, with the
/// configured linger.
pub fn own_producer(upstream: &UpstreamSettings, security: &Arc<UpstreamSecurity>) -> Producer {
    Producer::new(own_cluster(upstream, security)).with_linger(upstream.produce_linger())
}

/// The bearer-JWT verifier, when a key or secret is configured.
pub fn http_jwt(http: &HttpSettings) -> Result<Option<JwtVerifier>, SettingError> {
    let verifier = match (&http.http_jwt_public_key_file, &http.http_jwt_secret) {
        (Some(path), _) => JwtVerifier::from_public_key_file(path).map_err(|e| SettingError {
            name: "KAFSCALE_LFS_PROXY_HTTP_JWT_PUBLIC_KEY_FILE",
            reason: e.to_string(),
        })?,
        (None, Some(secret)) if !secret.expose().is_empty() => {
            JwtVerifier::from_secret(secret.expose().as_bytes())
        }
        _ => return Ok(None),
    };
    Ok(Some(
        verifier
            .require_issuer(&crate::config::trimmed(&http.http_jwt_issuer))
            .require_audience(&crate::config::trimmed(&http.http_jwt_audience)),
    ))
}
