//! The cluster store: where desired state lives. It is a small key-value
//! trait with one atomic primitive (`create`, put-if-absent), which is what
//! etcd transactions and Kubernetes objects can provide too, so the etcd
//! and kubernetes backends slot in behind the same trait later.
//!
//! Keys are '/'-separated paths: `endpoints/<node>/<container>/<ifname>`,
//! `identities/id/<n>`, `pods/<ns>/<name>/labels`.

mod etcd;
pub mod identity;
mod local;
pub mod pool;

pub use etcd::{EtcdStore, TlsFiles};
pub use local::LocalStore;

use serde::{Serialize, de::DeserializeOwned};
use std::{fmt, path::PathBuf};

#[derive(Debug)]
pub enum StoreError {
    Io { path: PathBuf, source: std::io::Error },
    InvalidKey { key: String, why: &'static str },
    Decode { key: String, error: String },
    Locked { dir: PathBuf },
    Unavailable { backend: String, cause: String },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, source } => write!(f, "store file {}: {source}", path.display()),
            StoreError::InvalidKey { key, why } => write!(f, "invalid store key {key:?}: {why}"),
            StoreError::Decode { key, error } => {
                write!(f, "store value at {key} cannot be decoded ({error}); fix or delete it")
            }
            StoreError::Locked { dir } => write!(
                f,
                "store {} is locked by another process (is another agent running with this state directory?)",
                dir.display()
            ),
            StoreError::Unavailable { backend, cause } => {
                write!(
                    f,
                    "store backend {backend} is unavailable: {cause}; check that it runs and is reachable"
                )
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// A condition of a transaction ([`Store::txn`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Cmp {
    /// The key does not exist.
    Absent(String),
    /// No key starts with the prefix.
    PrefixEmpty(String),
    /// The key exists and holds exactly these bytes.
    ValueIs(String, Vec<u8>),
}

/// A write of a transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

pub trait Store: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Puts only if the key is absent; false if it existed.
    fn create(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        self.txn(&[Cmp::Absent(key.into())], &[Op::Put(key.into(), value.to_vec())])
    }
    /// Applies every op atomically if every condition holds; false (and
    /// nothing written) otherwise. What identity references and pool
    /// claims are built on: etcd's txn, a mutex in the local backend.
    fn txn(&self, cmps: &[Cmp], ops: &[Op]) -> Result<bool, StoreError>;
    /// Deletes; false if the key did not exist.
    fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Every key under `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// e.g. "local:/var/lib/weft/store".
    fn describe(&self) -> String;

    /// A lease: keys put with it vanish when it is not renewed within `ttl`
    /// (node liveness). The local backend has one node only: no leases.
    fn grant_lease(&self, _ttl: std::time::Duration) -> Result<u64, StoreError> {
        Ok(0)
    }
    /// Renews a lease; false once it has expired (re-grant and re-put).
    fn keep_alive(&self, _lease: u64) -> Result<bool, StoreError> {
        Ok(true)
    }
    fn put_leased(&self, key: &str, value: &[u8], _lease: u64) -> Result<(), StoreError> {
        self.put(key, value)
    }
}

fn decode<T: DeserializeOwned>(key: &str, b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Decode { key: key.to_string(), error: e.to_string() })
}

pub fn get_json<T: DeserializeOwned>(s: &dyn Store, key: &str) -> Result<Option<T>, StoreError> {
    s.get(key)?.map(|b| decode(key, &b)).transpose()
}

pub fn put_json<T: Serialize + ?Sized>(s: &dyn Store, key: &str, v: &T) -> Result<(), StoreError> {
    s.put(key, &serde_json::to_vec(v).expect("value serializes"))
}

pub fn list_json<T: DeserializeOwned>(s: &dyn Store, prefix: &str) -> Result<Vec<(String, T)>, StoreError> {
    s.list(prefix)?.into_iter().map(|(k, b)| decode(&k, &b).map(|v| (k, v))).collect()
}
