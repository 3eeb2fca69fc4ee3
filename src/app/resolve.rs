//! `kafka-lfs-proxy resolve`: envelopes in, verified originals out, for
//! shell users of envelopes.

use std::io::{BufRead, Write};

use anyhow::Context;

use crate::config::ResolveArgs;
use crate::lfs::resolve::read_verified;

/// Reads envelopes from standard input, one per line; fails (after trying
/// every line) when any could not be resolved.
pub async fn resolve(args: ResolveArgs) -> anyhow::Result<()> {
    args.storage.validate().context("storage settings")?;
    let lfs = super::lfs(&args.storage)?;
    let scope = lfs.envelope_scope();
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("--out-dir {}", dir.display()))?;
    }
    let mut failed = 0usize;
    let mut resolved = 0usize;
    let stdin = std::io::stdin();
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line.context("reading standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        let n = n + 1;
        let envelope = match scope.recognise(line.as_bytes(), args.topic.as_deref()) {
            Ok(envelope) => envelope,
            Err(reason) => {
                eprintln!("line {n}: {reason}");
                failed += 1;
                continue;
            }
        };
        let bytes = match read_verified(&lfs.store, &envelope).await {
            Ok(bytes) => bytes,
            Err(error) => {
                eprintln!("line {n}: {error}");
                failed += 1;
                continue;
            }
        };
        resolved += 1;
        match &args.out_dir {
            Some(dir) => {
                let name = envelope.key.rsplit('/').next().unwrap_or("object");
                let path = dir.join(name);
                std::fs::write(&path, &bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("{} {} {}", path.display(), bytes.len(), envelope.sha256);
            }
            None => std::io::stdout()
                .lock()
                .write_all(&bytes)
                .context("writing standard output")?,
        }
    }
    std::io::stdout().flush().ok();
    if failed > 0 {
        anyhow::bail!("{failed} of {} envelopes not resolved", failed + resolved);
    }
    Ok(())
}
