//! `command` of a stdio server or instance: the process proxies (and discovery and health checks) start.
//! `secret_env` values are write-only: reads and exports show their names, and a name given without a
//! value keeps the stored one.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::err;
use crate::api::{ApiError, Code};
use crate::model::{CommandSpec, CommandView, MAX_ARGS, MAX_ENV, MAX_ITEM_BYTES, SecretInput};

/// `{"program", "args"?, "env"?, "secret_env"?, "working_directory"?}`. `Debug` hides the secret values.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// A bare name looked up in `PATH` (`npx`, `uvx`) or an absolute path; it must be listed in
    /// `--stdio-programs` exactly as given here.
    pub program: String,
    /// At most 64 arguments, each at most 4 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Environment of the process (names `[A-Za-z_][A-Za-z0-9_]*`); it also gets the `PATH` of whoever
    /// starts it, and nothing else of their environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Secret environment variables: `{"NAME": "value"}` (sealed with `--secrets-key`, never returned;
    /// `null` keeps the stored value), or a list of names keeping every stored value (the form reads and
    /// exports show). At most 64 entries with `env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub secret_env: Option<SecretEnvRequest>,
    /// Absolute directory the process starts in (default: that of whoever starts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
}

/// `secret_env`: values by name (a `null` value keeps the stored one), or names keeping every stored value.
/// `Debug` shows the names only.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SecretEnvRequest {
    Names(Vec<String>),
    Values(BTreeMap<String, Option<String>>),
}

impl fmt::Debug for SecretEnvRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Names(names) => f.debug_tuple("Names").field(names).finish(),
            Self::Values(values) => {
                f.debug_tuple("Values").field(&values.keys().collect::<Vec<_>>()).finish()
            }
        }
    }
}

impl fmt::Debug for CommandRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret_names: Vec<&String> = match &self.secret_env {
            None => Vec::new(),
            Some(SecretEnvRequest::Names(names)) => names.iter().collect(),
            Some(SecretEnvRequest::Values(values)) => values.keys().collect(),
        };
        f.debug_struct("CommandRequest")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &self.env)
            .field("secret_env", &secret_names)
            .field("working_directory", &self.working_directory)
            .finish()
    }
}

impl CommandRequest {
    /// The canonical request of a stored or validated command: secret names only (a request keeping them).
    pub fn from_view(view: &CommandView) -> Self {
        Self {
            program: view.program.clone(),
            args: (!view.args.is_empty()).then(|| view.args.clone()),
            env: (!view.env.is_empty()).then(|| view.env.clone()),
            secret_env: (!view.secret_env.is_empty())
                .then(|| SecretEnvRequest::Names(view.secret_env.clone())),
            working_directory: view.working_directory.clone(),
        }
    }

    /// Whether any string in it holds NUL (refused with its own message before the request's general check).
    pub(super) fn has_nul(&self) -> bool {
        let nul = |s: &String| s.contains('\0');
        nul(&self.program)
            || self.args.iter().flatten().any(nul)
            || self.env.iter().flatten().any(|(k, v)| nul(k) || nul(v))
            || self.working_directory.as_ref().is_some_and(nul)
            || match &self.secret_env {
                None => false,
                Some(SecretEnvRequest::Names(names)) => names.iter().any(nul),
                Some(SecretEnvRequest::Values(values)) => {
                    values.iter().any(|(k, v)| nul(k) || v.as_ref().is_some_and(nul))
                }
            }
    }

    /// Validates; `at` prefixes messages (`instances[0]: `). Messages never repeat a secret value.
    pub fn validate(self, at: &str) -> Result<CommandSpec, ApiError> {
        let bad = |why: String| err(Code::InvalidCommand, format!("{at}command{why}"));
        if self.has_nul() {
            return Err(bad(": strings must not contain NUL characters".into()));
        }
        let long = |s: &str| s.len() > MAX_ITEM_BYTES;
        let program = self.program;
        if program.trim().is_empty() || program.trim() != program || long(&program) {
            return Err(bad(format!(
                ".program must be 1-{MAX_ITEM_BYTES} bytes without surrounding whitespace"
            )));
        }
        if program.contains('/') && !program.starts_with('/') {
            return Err(bad(format!(
                ".program {program:?} must be a bare name (looked up in PATH) or an absolute path"
            )));
        }
        let args = self.args.unwrap_or_default();
        if args.len() > MAX_ARGS {
            return Err(bad(format!(".args: at most {MAX_ARGS} arguments, not {}", args.len())));
        }
        if let Some(i) = args.iter().position(|a| long(a)) {
            return Err(bad(format!(".args[{i}] is longer than {MAX_ITEM_BYTES} bytes")));
        }
        let env = self.env.unwrap_or_default();
        for (name, value) in &env {
            check_env_name(name).map_err(|why| bad(format!(".env {name:?} {why}")))?;
            if long(value) {
                return Err(bad(format!(".env {name:?}: the value is longer than {MAX_ITEM_BYTES} bytes")));
            }
        }
        let secret_env: BTreeMap<String, SecretInput> = match self.secret_env {
            None => BTreeMap::new(),
            Some(SecretEnvRequest::Names(names)) => {
                let mut kept = BTreeMap::new();
                for name in names {
                    if kept.insert(name.clone(), SecretInput::Keep).is_some() {
                        return Err(bad(format!(".secret_env {name:?} is listed twice")));
                    }
                }
                kept
            }
            Some(SecretEnvRequest::Values(values)) => values
                .into_iter()
                .map(|(name, value)| (name, value.map_or(SecretInput::Keep, SecretInput::New)))
                .collect(),
        };
        for (name, value) in &secret_env {
            check_env_name(name).map_err(|why| bad(format!(".secret_env {name:?} {why}")))?;
            if let SecretInput::New(value) = value
                && (value.is_empty() || long(value))
            {
                return Err(bad(format!(".secret_env {name:?}: the value must be 1-{MAX_ITEM_BYTES} bytes")));
            }
            if env.contains_key(name) {
                return Err(bad(format!(".secret_env {name:?} is also in env; give it in one of them")));
            }
        }
        if env.len() + secret_env.len() > MAX_ENV {
            return Err(bad(format!(".env and .secret_env: at most {MAX_ENV} entries together")));
        }
        let working_directory = match self.working_directory {
            None => None,
            Some(dir) if dir.starts_with('/') && !long(&dir) => Some(dir),
            Some(dir) => {
                return Err(bad(format!(
                    ".working_directory {dir:?} must be an absolute path of at most {MAX_ITEM_BYTES} bytes"
                )));
            }
        };
        Ok(CommandSpec { program, args, env, secret_env, working_directory })
    }
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, bounded.
fn check_env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || name.len() > MAX_ITEM_BYTES {
        return Err("is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(body: serde_json::Value) -> Result<CommandSpec, Code> {
        let request: CommandRequest = serde_json::from_value(body).map_err(|_| Code::MalformedJson)?;
        request.validate("").map_err(|e| e.code())
    }

    #[test]
    fn accepted_forms() {
        let spec = check(json!({
            "program": "npx", "args": ["-y", "pkg"], "env": {"MODE": "x", "_A1": ""},
            "secret_env": {"TOKEN": "s3cret", "OLD": null}, "working_directory": "/srv"
        }))
        .expect("valid");
        assert_eq!(spec.secret_env.get("TOKEN"), Some(&SecretInput::New("s3cret".into())));
        assert_eq!(spec.secret_env.get("OLD"), Some(&SecretInput::Keep));
        let kept = check(json!({"program": "/usr/bin/server", "secret_env": ["TOKEN"]})).expect("valid");
        assert_eq!(kept.secret_env.get("TOKEN"), Some(&SecretInput::Keep));
        assert_eq!(kept.endpoint_url(), "stdio:/usr/bin/server");
        let round = CommandRequest::from_view(&spec.view());
        assert_eq!(round.secret_env, Some(SecretEnvRequest::Names(vec!["OLD".into(), "TOKEN".into()])));
    }

    #[test]
    fn refusals_never_echo_a_secret() {
        let many: Vec<String> = (0..=MAX_ARGS).map(|i| i.to_string()).collect();
        let env: serde_json::Map<String, serde_json::Value> =
            (0..=MAX_ENV).map(|i| (format!("V{i}"), json!("x"))).collect();
        for body in [
            json!({"program": ""}),
            json!({"program": " npx"}),
            json!({"program": "bin/server"}),
            json!({"program": "./server"}),
            json!({"program": "npx\u{0}"}),
            json!({"program": "npx", "args": ["a\u{0}"]}),
            json!({"program": "npx", "args": many}),
            json!({"program": "npx", "args": ["x".repeat(MAX_ITEM_BYTES + 1)]}),
            json!({"program": "npx", "env": env}),
            json!({"program": "npx", "env": {"1A": "x"}}),
            json!({"program": "npx", "env": {"A-B": "x"}}),
            json!({"program": "npx", "env": {"A": "x".repeat(MAX_ITEM_BYTES + 1)}}),
            json!({"program": "npx", "secret_env": {"A B": "s3cret"}}),
            json!({"program": "npx", "secret_env": {"A": ""}}),
            json!({"program": "npx", "secret_env": {"A": "s3cret\u{0}"}}),
            json!({"program": "npx", "env": {"A": "x"}, "secret_env": {"A": "s3cret"}}),
            json!({"program": "npx", "secret_env": ["A", "A"]}),
            json!({"program": "npx", "working_directory": "srv"}),
        ] {
            let request: CommandRequest = serde_json::from_value(body.clone()).expect("parses");
            let error = request.validate("").expect_err("refused");
            assert_eq!(error.code(), Code::InvalidCommand, "{body}");
            assert!(!error.message().contains("s3cret"), "{}", error.message());
        }
        assert_eq!(check(json!({"program": "npx", "shell": true})), Err(Code::MalformedJson));
        assert_eq!(check(json!({"args": []})), Err(Code::MalformedJson));
        let request = CommandRequest {
            program: "npx".into(),
            secret_env: Some(SecretEnvRequest::Values(BTreeMap::from([("A".into(), Some("s3cret".into()))]))),
            ..Default::default()
        };
        assert!(!format!("{request:?}").contains("s3cret"));
    }
}
