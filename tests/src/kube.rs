//! A fake Kubernetes API server (`tests/peers/fake_kube.py`): Service lists and watches as the API serves
//! them, behind a service-account bearer token; the test sets the cluster's Services.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::peers::{START_TIMEOUT, peers_dir, python};
use crate::process::Spawned;
use crate::{free_port, localhost, wait_for_tcp};

pub struct FakeKube {
    _proc: Spawned,
    port: u16,
    http: reqwest::Client,
}

impl FakeKube {
    /// Starts it; requests must carry `Authorization: Bearer <token>`.
    pub async fn start(token: &str) -> Result<Self> {
        let port = free_port()?;
        let mut cmd = Command::new(python()?);
        cmd.arg(peers_dir().join("fake_kube.py")).args(["--port", &port.to_string(), "--token", token]);
        let proc = Spawned::spawn("fake-kube", cmd)?;
        wait_for_tcp(localhost(port), START_TIMEOUT).await.with_context(|| proc.describe())?;
        Ok(Self { _proc: proc, port, http: crate::http_client() })
    }

    /// `--kubernetes-api`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Replaces the cluster's Services (each change is a watch event).
    pub async fn set_services(&self, services: &[Value]) -> Result<()> {
        let resp = self.http.put(format!("{}/_test/services", self.url())).json(&services).send().await?;
        anyhow::ensure!(resp.status().is_success(), "fake API server: {}", resp.status());
        Ok(())
    }

    /// Requests received per path.
    pub async fn requests(&self) -> Result<Value> {
        Ok(self.http.get(format!("{}/_test/requests", self.url())).send().await?.json().await?)
    }
}

/// A Service in `namespace` with `annotations`, one port `port` named `http`, on cluster IP 127.0.0.1.
pub fn service(namespace: &str, name: &str, annotations: Value, port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": namespace, "name": name, "annotations": annotations},
        "spec": {"clusterIP": "127.0.0.1", "ports": [{"name": "http", "port": port, "protocol": "TCP"}]},
    })
}
