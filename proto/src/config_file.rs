//! `--config <file>` of both binaries: a YAML mapping whose keys are the long flag names (`listen`,
//! `session-key`, …) and whose values are what the flag would take. The file is the lowest source: a flag
//! on the command line beats its environment variable, which beats the file, which beats the default.
//!
//! The file's settings become command-line arguments placed before the real ones, so clap validates them
//! exactly as it validates flags (and `validate` checks a file without starting anything).

use std::ffi::OsString;
use std::path::Path;

use clap::ArgAction;

/// The flag and environment variable that name the file.
pub const FLAG: &str = "config";
pub const ENV: &str = "MCPGW_CONFIG";

/// The process's command line with its `--config` file, parsed by clap (which exits with its own message
/// on a bad flag or `--help`); `Err` when the file cannot be read or holds something that is no flag.
pub fn parse<P: clap::Parser>() -> Result<P, String> {
    let args = expand(&P::command(), std::env::args_os().collect(), |name| std::env::var_os(name))?;
    Ok(P::parse_from(args))
}

/// `args` (the process's, program name first) with the settings of the `--config` file, or of
/// `MCPGW_CONFIG`, inserted after the program name; `args` unchanged when neither is given. `env` looks up
/// an environment variable (`std::env::var_os` in the binaries).
pub fn expand(
    command: &clap::Command,
    args: Vec<OsString>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Vec<OsString>, String> {
    let Some(path) = file_argument(&args).or_else(|| env(ENV).filter(|v| !v.is_empty())) else {
        return Ok(args);
    };
    let path = Path::new(&path);
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let settings = settings(command, &text, &args, &env).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut expanded = Vec::with_capacity(args.len() + settings.len());
    let mut args = args.into_iter();
    expanded.extend(args.next());
    expanded.extend(settings);
    expanded.extend(args);
    Ok(expanded)
}

/// The value of `--config <path>` / `--config=<path>` on the command line.
fn file_argument(args: &[OsString]) -> Option<OsString> {
    let long = format!("--{FLAG}");
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            return None;
        }
        if text == long {
            return iter.next().cloned();
        }
        if let Some(value) = text.strip_prefix(&format!("{long}=")) {
            return Some(value.into());
        }
    }
    None
}

/// Whether `--name` is on the command line (alone or as `--name=value`).
fn on_command_line(args: &[OsString], name: &str) -> bool {
    let long = format!("--{name}");
    args.iter().skip(1).map(|a| a.to_string_lossy()).take_while(|a| a != "--").any(|a| {
        a == long.as_str() || a.strip_prefix(long.as_str()).is_some_and(|rest| rest.starts_with('='))
    })
}

/// The file's settings as arguments, skipping those the command line or the environment already set.
fn settings(
    command: &clap::Command,
    text: &str,
    args: &[OsString],
    env: &impl Fn(&str) -> Option<OsString>,
) -> Result<Vec<OsString>, String> {
    let document: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let mapping = match document {
        serde_yaml::Value::Mapping(mapping) => mapping,
        serde_yaml::Value::Null => return Ok(Vec::new()),
        _ => return Err("must be a mapping of flag names to values".into()),
    };
    let mut out = Vec::new();
    for (key, value) in mapping {
        let key = key.as_str().ok_or("every key must be a flag name (a string)")?;
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key) && key != FLAG)
            .ok_or_else(|| format!("unknown setting `{key}` (keys are the long flag names, see --help)"))?;
        let from_env =
            arg.get_env().and_then(|name| env(&name.to_string_lossy())).is_some_and(|v| !v.is_empty());
        if on_command_line(args, key) || from_env {
            continue;
        }
        let flag = format!("--{key}");
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, serde_yaml::Value::Bool(set)) => {
                if set {
                    out.push(flag.into());
                }
            }
            (ArgAction::SetTrue, _) => return Err(format!("`{key}` is a switch: true or false")),
            (_, serde_yaml::Value::Sequence(items)) => {
                let delimiter =
                    arg.get_value_delimiter().ok_or_else(|| format!("`{key}` takes one value"))?;
                let items = items.iter().map(|v| scalar(key, v)).collect::<Result<Vec<_>, _>>()?;
                out.push(flag.into());
                out.push(items.join(&delimiter.to_string()).into());
            }
            (_, value) => {
                out.push(flag.into());
                out.push(scalar(key, &value)?.into());
            }
        }
    }
    Ok(out)
}

fn scalar(key: &str, value: &serde_yaml::Value) -> Result<String, String> {
    match value {
        serde_yaml::Value::String(s) => Ok(s.clone()),
        serde_yaml::Value::Number(n) => Ok(n.to_string()),
        serde_yaml::Value::Bool(b) => Ok(b.to_string()),
        _ => Err(format!("`{key}` must be a string, a number or a boolean")),
    }
}

#[cfg(test)]
mod tests {
    use clap::{Arg, Command};

    use super::*;

    fn command() -> Command {
        Command::new("bin")
            .arg(Arg::new("config").long("config").global(true))
            .arg(Arg::new("listen").long("listen").env("T_LISTEN").default_value("127.0.0.1:1"))
            .arg(Arg::new("threads").long("threads").env("T_THREADS"))
            .arg(Arg::new("hosts").long("hosts").value_delimiter(','))
            .arg(Arg::new("anonymous").long("anonymous").action(ArgAction::SetTrue))
    }

    /// A file removed when dropped, and its path as an argument.
    struct TempFile(std::path::PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file(text: &str) -> (TempFile, OsString) {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("mcpgw-config-{}-{}.yaml", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).expect("write the file");
        let arg = path.clone().into_os_string();
        (TempFile(path), arg)
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn get(args: Vec<OsString>, id: &str) -> Option<String> {
        command().try_get_matches_from(args).expect("valid").get_one::<String>(id).cloned()
    }

    #[test]
    fn a_file_sets_what_nothing_else_set() {
        let (_f, path) =
            file("listen: 0.0.0.0:8080\nthreads: 4\nhosts: [a.example, b.example]\nanonymous: true\n");
        let args = vec!["bin".into(), "--config".into(), path];
        let expanded = expand(&command(), args, |_| None).expect("expands");
        let matches = command().try_get_matches_from(expanded.clone()).expect("valid");
        assert_eq!(matches.get_one::<String>("listen").map(String::as_str), Some("0.0.0.0:8080"));
        assert_eq!(matches.get_one::<String>("threads").map(String::as_str), Some("4"));
        let hosts: Vec<&String> = matches.get_many::<String>("hosts").expect("hosts").collect();
        assert_eq!(hosts, ["a.example", "b.example"]);
        assert!(matches.get_flag("anonymous"));
    }

    #[test]
    fn flags_then_environment_then_file() {
        let (_f, path) = file("listen: 0.0.0.0:8080\nthreads: 4\n");
        let env = |name: &str| (name == "T_THREADS").then(|| OsString::from("8"));
        let args = os(&["bin", "--listen=10.0.0.1:1"]);
        let args = [args, vec!["--config".into(), path]].concat();
        let expanded = expand(&command(), args, env).expect("expands");
        assert!(!expanded.iter().any(|a| a == "0.0.0.0:8080"), "the flag wins: {expanded:?}");
        assert!(!expanded.iter().any(|a| a == "4"), "the environment wins: {expanded:?}");
        assert_eq!(get(expanded, "listen").as_deref(), Some("10.0.0.1:1"));
    }

    #[test]
    fn the_environment_names_the_file() {
        let (_f, path) = file("threads: 3\n");
        let env = move |name: &str| (name == ENV).then(|| path.clone());
        let expanded = expand(&command(), os(&["bin"]), env).expect("expands");
        assert_eq!(get(expanded, "threads").as_deref(), Some("3"));
        assert_eq!(expand(&command(), os(&["bin", "x"]), |_| None).expect("no file"), os(&["bin", "x"]));
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let cases = [
            ("lisen: 1\n", "unknown setting `lisen`"),
            ("- listen\n", "must be a mapping"),
            ("listen: [a, b]\n", "`listen` takes one value"),
            ("anonymous: yes please\n", "`anonymous` is a switch"),
            ("threads: {a: 1}\n", "`threads` must be a string"),
            ("listen: \"a\n", "not YAML"),
        ];
        for (text, reason) in cases {
            let (_f, path) = file(text);
            let err = expand(&command(), vec!["bin".into(), "--config".into(), path], |_| None).unwrap_err();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
        let err =
            expand(&command(), os(&["bin", "--config", "/nonexistent/mcpgw.yaml"]), |_| None).unwrap_err();
        assert!(err.starts_with("cannot read /nonexistent/mcpgw.yaml"), "{err}");
    }
}
