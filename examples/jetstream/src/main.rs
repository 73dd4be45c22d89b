//! `walstream-jetstream`: a logical replication slot's committed changes into NATS
//! JetStream, each exactly once (see the crate docs and README.md).

use std::process::ExitCode;

use clap::Parser;
use walstream::CancellationToken;
use walstream_jetstream::{run, Options};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let options = Options::parse();
    let cancel = CancellationToken::new();
    // SIGINT and SIGTERM stop at the next transaction boundary with a last status update.
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        on_signal.cancel();
    });
    match run(&options, cancel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
