//! How both planes start a stdio server's process (the proxies for sessions, the control plane for
//! discovery and health checks): `program` with `args` in `working_directory` (`None`: the caller's),
//! its environment exactly `env` plus the caller's `PATH` — nothing else of the caller's environment (its
//! session key, tokens, database URL) is inherited — and stdin, stdout and stderr piped.

use std::process::{Command, Stdio};

/// The process, ready to spawn (wrap it in `tokio::process::Command::from` and set `kill_on_drop`).
pub fn command<'a>(
    program: &str,
    args: &[String],
    env: impl IntoIterator<Item = (&'a String, &'a String)>,
    working_directory: Option<&str>,
) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(std::env::var_os("PATH").map(|path| (std::ffi::OsString::from("PATH"), path)))
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = working_directory.filter(|d| !d.is_empty()) {
        cmd.current_dir(dir);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_the_commands_and_path_only() {
        let env = [("K".to_owned(), "v".to_owned())];
        let cmd = command("prog", &["a".to_owned()], env.iter().map(|(k, v)| (k, v)), Some("/tmp"));
        let vars: Vec<_> = cmd.get_envs().map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned()))).collect();
        assert!(vars.iter().any(|(k, v)| k == "K" && v.as_deref() == Some(std::ffi::OsStr::new("v"))));
        assert!(vars.iter().all(|(k, _)| k == "K" || k == "PATH"), "{vars:?}");
        assert_eq!(cmd.get_current_dir(), Some(std::path::Path::new("/tmp")));
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["a"]);
    }
}
