//! The last good routing table on disk, so a proxy that starts while the control plane is unreachable
//! serves what it served before instead of nothing. Written after every applied update (temp file, then
//! rename, so a crash never leaves a torn file); read once at start.

use std::path::{Path, PathBuf};

use mcpgw_proto::ResourceSet;
use mcpgw_proto::v1::RoutingUpdate;
use prost::Message;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a routing table: {source}")]
    Decode { path: PathBuf, source: prost::DecodeError },
    #[error("{path} holds an inconsistent table: {source}")]
    Invalid { path: PathBuf, source: mcpgw_proto::ApplyError },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Where the last good table lives.
#[derive(Debug, Clone)]
pub struct TableCache {
    path: PathBuf,
}

impl TableCache {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached table, or `None` when there is no cache file yet.
    pub fn load(&self) -> Result<Option<ResourceSet>, CacheError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Read { path: self.path.clone(), source }),
        };
        let update = RoutingUpdate::decode(bytes.as_slice())
            .map_err(|source| CacheError::Decode { path: self.path.clone(), source })?;
        ResourceSet::new(update.version, update.upserts)
            .map(Some)
            .map_err(|source| CacheError::Invalid { path: self.path.clone(), source })
    }

    /// Replaces the cache with `set` atomically and durably. The table holds upstream credentials, so the
    /// file is readable by the proxy's user only.
    pub async fn store(&self, set: &ResourceSet) -> Result<(), CacheError> {
        use tokio::io::AsyncWriteExt;
        let write_err = |source| CacheError::Write { path: self.path.clone(), source };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(write_err)?;
        }
        let tmp = self.path.with_extension("tmp");
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .await
            .map_err(write_err)?;
        file.write_all(&set.snapshot().encode_to_vec()).await.map_err(write_err)?;
        // Durable before it replaces the old file: a crash leaves either table, never an empty one.
        file.sync_all().await.map_err(write_err)?;
        drop(file);
        tokio::fs::rename(&tmp, &self.path).await.map_err(write_err)?;
        // The rename is durable once its directory is: until then a crash may bring back the old name.
        let dir =
            self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        tokio::fs::File::open(dir).await.map_err(write_err)?.sync_all().await.map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpgw_proto::v1::{Resource, Server, resource::Kind};

    #[tokio::test]
    async fn round_trip_and_bad_files() {
        let dir = std::env::temp_dir().join(format!("mcpgw-cache-test-{}", std::process::id()));
        let cache = TableCache::new(dir.join("nested/table.bin"));
        assert!(cache.load().unwrap().is_none(), "no file yet");
        let server = Resource {
            kind: Some(Kind::Server(Server { id: "s".into(), name: "a".into(), ..Default::default() })),
        };
        let set = ResourceSet::new(42, [server]).unwrap();
        cache.store(&set).await.unwrap();
        assert_eq!(cache.load().unwrap(), Some(set));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cache.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the table holds upstream credentials");
        std::fs::write(cache.path(), b"\xff\xff garbage").unwrap();
        assert!(matches!(cache.load(), Err(CacheError::Decode { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
