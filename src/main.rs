//! The binary's edge: parse settings, start listeners, wait for shutdown.

use std::process::ExitCode;

use clap::Parser;
use kafka_lfs_proxy::config::{Cli, Command, ProcessorArgs};
use kafka_lfs_proxy::{app, inspect};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::InspectCapture(args)) => inspect_capture(&args.dir, &args.forbid),
        Some(Command::Credentials(args)) => credentials(&args),
        Some(Command::Processor(args)) => processor(*args),
        Some(Command::Resolve(args)) => block_on("kafka-lfs-proxy resolve", app::resolve(*args)),
        Some(Command::Gc(args)) => block_on("kafka-lfs-proxy gc", app::collect_garbage(*args)),
        None => {
            if let Err(error) = cli.settings.validate() {
                eprintln!("kafka-lfs-proxy: {error}");
                return ExitCode::from(2);
            }
            block_on("kafka-lfs-proxy", app::run_proxy(cli.settings))
        }
    }
}

fn processor(mut args: ProcessorArgs) -> ExitCode {
    let config = match app::load_processor_config(&mut args) {
        Ok(c) => c,
        Err(error) => {
            eprintln!("kafka-lfs-proxy processor: {error:#}");
            return ExitCode::from(2);
        }
    };
    block_on(
        "kafka-lfs-proxy processor",
        app::run_processor(args, config),
    )
}

/// Runs `work` on a new multi-threaded runtime; errors are printed under
/// `name` and exit 1.
fn block_on(name: &str, work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("{name}: cannot start runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn inspect_capture(dir: &std::path::Path, forbid: &[String]) -> ExitCode {
    let report = match inspect::inspect(dir, forbid) {
        Ok(r) => r,
        Err(error) => {
            eprintln!("cannot read {}: {error}", dir.display());
            return ExitCode::from(2);
        }
    };
    println!(
        "responses decoded: {}",
        report.responses - report.errors.len()
    );
    println!("broker addresses shown to clients: {:?}", report.addresses);
    for e in &report.errors {
        println!("undecodable: {e}");
    }
    for l in &report.leaks {
        println!("LEAK: {l}");
    }
    if report.leaks.is_empty() && report.errors.is_empty() && report.responses > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `credentials`: adds (or removes) a user in a client credentials file.
fn credentials(args: &kafka_lfs_proxy::config::CredentialsArgs) -> ExitCode {
    use kafka_lfs_proxy::kafka::auth::credentials::CredentialsFile;
    use kafka_lfs_proxy::kafka::auth::scram::ScramHash;
    let mut file = match CredentialsFile::read_or_new(&args.file) {
        Ok(f) => f,
        Err(error) => {
            eprintln!("kafka-lfs-proxy: {error}");
            return ExitCode::from(2);
        }
    };
    if args.remove {
        file.users.remove(&args.user);
    } else {
        let mut password = String::new();
        if std::io::stdin().read_line(&mut password).is_err() {
            eprintln!("kafka-lfs-proxy: cannot read the password from standard input");
            return ExitCode::from(2);
        }
        let password = password.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            eprintln!("kafka-lfs-proxy: the password (standard input) is empty");
            return ExitCode::from(2);
        }
        for hash in [ScramHash::Sha256, ScramHash::Sha512] {
            if let Err(error) = file.set(&args.user, hash, password, args.iterations) {
                eprintln!("kafka-lfs-proxy: {error}");
                return ExitCode::from(2);
            }
        }
    }
    match file.write(&args.file) {
        Ok(()) => {
            println!(
                "{} {} in {}",
                if args.remove { "removed" } else { "wrote" },
                args.user,
                args.file.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("kafka-lfs-proxy: {error}");
            ExitCode::FAILURE
        }
    }
}
