//! `mcpgw-control-plane`: parses flags and environment, then serves, validates or migrates.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use mcpgw_control_plane::{Cli, Command, cli, db, serve, telemetry, validate};

/// How long `healthcheck` waits for the REST listener.
const HEALTHCHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let cli: Cli = match mcpgw_proto::config_file::parse() {
        Ok(cli) => cli,
        Err(error) => {
            eprintln!("error: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let config = match validate(&cli.settings) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.clone().unwrap_or(Command::Serve);
    match &command {
        Command::Validate => {
            println!("configuration is valid\n{}", config.summary());
            return ExitCode::SUCCESS;
        }
        Command::Healthcheck => {
            return match mcpgw_proto::probe::http_ready(config.http_addr, "/ready", HEALTHCHECK_TIMEOUT) {
                Ok(_) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: not ready: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "mcpgw-control-plane", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Export
        | Command::Import(_)
        | Command::Servers(_)
        | Command::Instances(_)
        | Command::Keys(_)
        | Command::Limits(_)
        | Command::Audit(_) => {
            return run_cli(&config, cli.settings.admin_token.as_deref(), &command);
        }
        Command::Serve | Command::Migrate => {}
    }
    let exporter = telemetry::init(config.log_format, config.otlp.as_ref(), &config.replica_id);
    let outcome = match command {
        Command::Migrate => run_migrate(config),
        _ => run_serve(config, exporter),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "The control plane stopped with an error.");
            ExitCode::FAILURE
        }
    }
}

fn run_cli(config: &mcpgw_control_plane::Config, token: Option<&str>, command: &Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match command {
            Command::Import(args) => cli::import(config, token, args).await,
            Command::Servers(c) => cli::servers(config, token, c).await,
            Command::Instances(c) => cli::instances(config, token, c).await,
            Command::Keys(c) => cli::keys(config, token, c).await,
            Command::Limits(c) => cli::limits(config, token, c).await,
            Command::Audit(args) => cli::audit(config, token, args).await,
            _ => cli::export(config, token).await,
        }
    });
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

#[actix_web::main]
async fn run_serve(
    config: mcpgw_control_plane::Config,
    exporter: Option<mcpgw_proto::otlp::Worker>,
) -> anyhow::Result<()> {
    if let Some(exporter) = exporter {
        tokio::spawn(exporter.run());
    }
    serve::run(config).await.context("serve failed")
}

#[actix_web::main]
async fn run_migrate(config: mcpgw_control_plane::Config) -> anyhow::Result<()> {
    let applied = db::prepare(&config.database)
        .await
        .with_context(|| format!("migrating {}", config.database.redacted()))?;
    if applied.is_empty() {
        tracing::info!(database = config.database.name(), "The database is up to date.");
    } else {
        tracing::info!(database = config.database.name(), applied = applied.join(","), "Applied migrations.");
    }
    Ok(())
}
