//! Fetch rehydration settings: which consumers get original values back,
//! and the memory that may take.

use std::net::SocketAddr;

use clap::Args;

use super::listener::ListenerSettings;
use super::values::{parse_positive, trimmed, SettingError};

/// Node ids assumed when checking that two listeners' broker ports cannot
/// meet: 0 to this (tansu's node id is 111). A larger id is checked when
/// its port is bound: a port in use fails loudly.
pub const NODE_ID_SPAN: u16 = 256;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Fetch rehydration")]
pub struct RehydrateSettings {
    /// Consumers whose client.id starts with one of these (comma-separated)
    /// get original values instead of envelopes [default: none]
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_REHYDRATE_CLIENT_IDS",
        value_delimiter = ','
    )]
    pub rehydrate_client_ids: Vec<String>,

    /// SASL users (comma-separated) who get original values; needs
    /// CLIENT_SASL_MODE=terminate, where the proxy knows the user [default: none]
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_REHYDRATE_PRINCIPALS",
        value_delimiter = ','
    )]
    pub rehydrate_principals: Vec<String>,

    /// A second bootstrap address whose clients always get original values
    /// [default: none]
    #[arg(long, env = "KAFSCALE_LFS_PROXY_REHYDRATE_ADDR")]
    pub rehydrate_addr: Option<SocketAddr>,

    /// Broker ports of the rehydrating listener: node N at BASE + N
    /// [default: REHYDRATE_ADDR's port + 1]
    #[arg(long, env = "KAFSCALE_LFS_PROXY_REHYDRATE_BROKER_PORT_BASE")]
    pub rehydrate_broker_port_base: Option<u16>,

    /// Bytes of verified objects kept for other consumers (least recently
    /// used leave first; 0 keeps none).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_REHYDRATE_CACHE_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub rehydrate_cache_bytes: usize,

    /// Memory for Fetch responses being built or written, across all
    /// connections, counted as three times their original values (read,
    /// rebuilt, encoded); responses wait for room.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_REHYDRATE_INFLIGHT_BYTES", default_value_t = 512 * 1024 * 1024, value_parser = parse_positive::<usize>)]
    pub rehydrate_inflight_bytes: usize,
}

impl RehydrateSettings {
    pub fn client_id_prefixes(&self) -> Vec<String> {
        trimmed(&self.rehydrate_client_ids)
    }

    pub fn principals(&self) -> Vec<String> {
        trimmed(&self.rehydrate_principals)
    }

    pub fn broker_port_base(&self) -> Option<u16> {
        let addr = self.rehydrate_addr?;
        Some(
            self.rehydrate_broker_port_base
                .unwrap_or_else(|| addr.port().wrapping_add(1)),
        )
    }

    /// Whether any consumer can be rehydrated.
    pub fn enabled(&self) -> bool {
        self.rehydrate_addr.is_some()
            || !self.client_id_prefixes().is_empty()
            || !self.principals().is_empty()
    }

    pub fn validate(&self, listener: &ListenerSettings) -> Result<(), SettingError> {
        if !self.principals().is_empty()
            && listener.client_sasl_mode() != super::ClientSaslMode::Terminate
        {
            return Err(SettingError {
                name: "KAFSCALE_LFS_PROXY_REHYDRATE_PRINCIPALS",
                reason: "needs KAFSCALE_LFS_PROXY_CLIENT_SASL_MODE=terminate: only then does the proxy know who logged in".into(),
            });
        }
        let (Some(addr), Some(base)) = (self.rehydrate_addr, self.broker_port_base()) else {
            return Ok(());
        };
        let name = "KAFSCALE_LFS_PROXY_REHYDRATE_ADDR";
        if addr.port() == 0 || base == 0 {
            return Err(SettingError {
                name,
                reason: "needs fixed ports: broker ports are derived from them".into(),
            });
        }
        let first = listener.addr.port();
        let first_base = listener.broker_port_base();
        let in_range = |port: u16, base: u16| {
            (base as u32..base as u32 + NODE_ID_SPAN as u32).contains(&(port as u32))
        };
        let ranges_meet = (base as u32) < first_base as u32 + NODE_ID_SPAN as u32
            && (first_base as u32) < base as u32 + NODE_ID_SPAN as u32;
        if addr.port() == first
            || in_range(addr.port(), first_base)
            || in_range(first, base)
            || ranges_meet
        {
            return Err(SettingError {
                name,
                reason: format!(
                    "port {} with broker ports {base}-{} meets the first listener's port {first} or its broker ports {first_base}-{}",
                    addr.port(),
                    base as u32 + NODE_ID_SPAN as u32 - 1,
                    first_base as u32 + NODE_ID_SPAN as u32 - 1,
                ),
            });
        }
        Ok(())
    }
}
