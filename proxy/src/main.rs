//! `mcpgw-proxy`: parse settings, validate them, then serve (or just report for `validate`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use mcpgw_proxy::config::{Cli, Command};

/// How long `healthcheck` waits for the admin listener.
const HEALTHCHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let cli: Cli = match mcpgw_proto::config_file::parse() {
        Ok(cli) => cli,
        Err(error) => {
            eprintln!("mcpgw-proxy: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let config = match cli.settings.validate() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("mcpgw-proxy: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Validate => {
            println!(
                "configuration is valid: listen={} admin_addr={} control_plane={} proxy_id={}",
                config.listen, config.admin_addr, config.control_plane, config.proxy_id
            );
            ExitCode::SUCCESS
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "mcpgw-proxy", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Healthcheck => {
            match mcpgw_proto::probe::http_ready(config.admin_addr, "/readyz", HEALTHCHECK_TIMEOUT) {
                Ok(_) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("mcpgw-proxy: not ready: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve => {
            mcpgw_proto::logs::init(config.json_logs, tracing_subscriber::layer::Identity::new());
            tracing::info!(
                listen = %config.listen,
                admin_addr = %config.admin_addr,
                control_plane = %config.control_plane,
                proxy_id = %config.proxy_id,
                "Starting mcpgw proxy."
            );
            let (server, run_args) = mcpgw_proxy::server::build(&config);
            server.run(run_args);
            tracing::info!("Stopped.");
            ExitCode::SUCCESS
        }
    }
}
