//! stdio servers' commands: the validated `CommandSpec` of a registration, what `instances.command` stores
//! (`StoredCommand`: nothing secret), what reads show (`CommandView`: the secret environment by name only)
//! and the `StdioCommand` proxies receive (the secret environment merged into `env`). Secret values are
//! sealed like upstream credentials, in their table (`upstream_auth`, kind `stdio_env`).

use std::collections::BTreeMap;

use mcpgw_proto::v1;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::upstream_auth::SecretInput;

/// The `upstream_credentials.kind` of a stdio instance's secret environment.
pub const STDIO_ENV: &str = "stdio_env";
/// Most arguments of one command.
pub const MAX_ARGS: usize = 64;
/// Most environment entries of one command, `env` and `secret_env` together.
pub const MAX_ENV: usize = 64;
/// Longest program, argument, environment name or value and working directory, in bytes.
pub const MAX_ITEM_BYTES: usize = 4096;

/// A validated `command` of a stdio instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// A bare name (looked up in `PATH`) or an absolute path.
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Sealed at rest, never shown; `Keep` reuses the stored value of that name.
    pub secret_env: BTreeMap<String, SecretInput>,
    /// Absolute; `None`: the working directory of whoever starts it.
    pub working_directory: Option<String>,
}

impl CommandSpec {
    /// The instance's `endpoint_url`: `stdio:<program>` (for display, and to match instances on PUT).
    pub fn endpoint_url(&self) -> String {
        format!("{}:{}", mcpgw_proto::validate::STDIO_SCHEME, self.program)
    }

    /// What `instances.command` stores.
    pub fn stored(&self) -> StoredCommand {
        StoredCommand {
            program: self.program.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            working_directory: self.working_directory.clone(),
        }
    }

    /// Whether writing it seals a new secret value (and so needs `--secrets-key`).
    pub fn has_new_secret(&self) -> bool {
        self.secret_env.values().any(|v| matches!(v, SecretInput::New(_)))
    }

    /// The form reads show.
    pub fn view(&self) -> CommandView {
        self.stored().view(self.secret_env.keys().cloned().collect())
    }
}

/// `instances.command`: a stdio instance's command without its secret environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCommand {
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
}

impl StoredCommand {
    /// The column's JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The command a stored column holds (written by this crate; anything else reads as none).
    pub fn from_json(value: &Value) -> Option<Self> {
        serde_json::from_value(value.clone()).ok()
    }

    /// What reads show, with the names of the secret environment.
    pub fn view(&self, secret_env: Vec<String>) -> CommandView {
        CommandView {
            program: self.program.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            secret_env,
            working_directory: self.working_directory.clone(),
        }
    }

    /// The wire form sent to proxies: `secret_env` (opened) merged into `env`.
    pub fn to_proto(&self, secret_env: Option<&BTreeMap<String, String>>) -> v1::StdioCommand {
        let mut env: std::collections::HashMap<String, String> =
            self.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        env.extend(secret_env.into_iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
        v1::StdioCommand {
            program: self.program.clone(),
            args: self.args.clone(),
            env,
            working_directory: self.working_directory.clone().unwrap_or_default(),
        }
    }
}

/// A stdio instance's command as every read, list, export and audit record shows it: the secret
/// environment by name only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CommandView {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// The names of the secret environment variables; their values are sealed and sent only to proxies.
    pub secret_env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_get_the_secrets_merged_and_reads_their_names() {
        let spec = CommandSpec {
            program: "npx".into(),
            args: vec!["-y".into(), "server".into()],
            env: BTreeMap::from([("MODE".into(), "test".into())]),
            secret_env: BTreeMap::from([("TOKEN".into(), SecretInput::New("s3cret".into()))]),
            working_directory: Some("/srv".into()),
        };
        assert_eq!(spec.endpoint_url(), "stdio:npx");
        assert!(spec.has_new_secret());
        let view = serde_json::to_string(&spec.view()).expect("json");
        assert!(!view.contains("s3cret") && view.contains("\"secret_env\":[\"TOKEN\"]"), "{view}");
        assert!(!format!("{spec:?}").contains("s3cret"));
        let stored = StoredCommand::from_json(&spec.stored().to_json()).expect("round trip");
        assert_eq!(stored, spec.stored());
        let secrets = BTreeMap::from([("TOKEN".to_owned(), "s3cret".to_owned())]);
        let wire = stored.to_proto(Some(&secrets));
        assert_eq!((wire.program.as_str(), wire.working_directory.as_str()), ("npx", "/srv"));
        assert_eq!(wire.env.get("TOKEN").map(String::as_str), Some("s3cret"));
        assert_eq!(wire.env.get("MODE").map(String::as_str), Some("test"));
        assert_eq!(stored.to_proto(None).env.len(), 1);
    }
}
