//! The etcd backend: etcd's v3 API through its JSON gateway (Debian's etcd
//! 3.4 serves it on the client port). `create` is a transaction on
//! create_revision == 0, so two agents racing for one key never both win;
//! leases carry node liveness.

mod http;

use crate::{Cmp, Op, Store, StoreError};
use serde_json::{Value, json};
use std::{path::PathBuf, time::Duration};

/// Files for talking TLS to etcd: the CA that signed etcd's certificate
/// and, when etcd checks clients (`--client-cert-auth`), this client's
/// certificate and key (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

pub struct EtcdStore {
    /// host:port of each member; tried in order.
    endpoints: Vec<String>,
    /// Every key lives under this prefix (e.g. "/weft/"), so a shared etcd
    /// can hold other things.
    prefix: String,
    timeout: Duration,
}

impl EtcdStore {
    /// `urls`: one per member, e.g. "http://198.18.0.2:2379".
    ///
    /// This JSON-gateway backend speaks plain http only: `tls: Some` is
    /// refused (the etcd-client backend implements it).
    pub fn new(urls: &[String], prefix: &str, tls: Option<&TlsFiles>) -> Result<Self, StoreError> {
        let shown = urls.join(",");
        if let Some(tls) = tls {
            return Err(StoreError::Unavailable {
                backend: format!("etcd {shown}"),
                cause: format!(
                    "TLS (CA {}) needs the etcd-client backend; this build speaks plain http only",
                    tls.ca.display()
                ),
            });
        }
        let endpoints: Vec<String> = urls
            .iter()
            .map(|u| u.trim().trim_start_matches("http://").trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if endpoints.is_empty() || urls.iter().any(|u| u.contains("https://")) {
            return Err(StoreError::Unavailable {
                backend: format!("etcd {shown}"),
                cause: "give etcd as http://HOST:PORT (https needs --etcd-ca and the etcd-client backend)"
                    .into(),
            });
        }
        Ok(Self { endpoints, prefix: prefix.to_string(), timeout: Duration::from_secs(5) })
    }

    /// Fails with a clear error unless etcd answers.
    pub fn check(&self) -> Result<(), StoreError> {
        self.call("/v3/kv/range", json!({ "key": http::b64(self.full("health-probe").as_bytes()) }))
            .map(|_| ())
    }

    fn unavailable(&self, cause: String) -> StoreError {
        StoreError::Unavailable { backend: format!("etcd {}", self.endpoints.join(",")), cause }
    }

    fn call(&self, path: &str, body: Value) -> Result<Value, StoreError> {
        let body = body.to_string();
        let mut last = String::new();
        for ep in &self.endpoints {
            match http::post(ep, path, body.as_bytes(), self.timeout) {
                Ok(r) if r.status == 200 => {
                    return serde_json::from_slice(&r.body)
                        .map_err(|e| self.unavailable(format!("{path}: undecodable answer: {e}")));
                }
                Ok(r) => last = format!("{path}: HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)),
                Err(e) => last = format!("{ep}: {e}"),
            }
        }
        Err(self.unavailable(last))
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn key_b64(&self, key: &str) -> String {
        http::b64(self.full(key).as_bytes())
    }

    fn put_inner(&self, key: &str, value: &[u8], lease: u64) -> Result<(), StoreError> {
        let mut req = json!({ "key": self.key_b64(key), "value": http::b64(value) });
        if lease != 0 {
            req["lease"] = json!(lease.to_string());
        }
        self.call("/v3/kv/put", req).map(|_| ())
    }
}

/// The key after every key with `prefix`: etcd's range_end for a prefix.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn num(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.call("/v3/kv/range", json!({ "key": self.key_b64(key) }))?;
        Ok(r["kvs"][0]["value"].as_str().map(|v| http::unb64(v).unwrap_or_default()).or_else(|| {
            // A present key with an empty value has no "value" field.
            r["kvs"][0].is_object().then(Vec::new)
        }))
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.put_inner(key, value, 0)
    }

    fn txn(&self, cmps: &[Cmp], ops: &[Op]) -> Result<bool, StoreError> {
        let compare: Vec<Value> = cmps
            .iter()
            .map(|c| match c {
                Cmp::Absent(k) => {
                    json!({ "key": self.key_b64(k), "target": "CREATE", "result": "EQUAL", "create_revision": "0" })
                }
                // Over a range, etcd requires the comparison of every key in
                // it; an empty range compares as one absent key.
                Cmp::PrefixEmpty(p) => {
                    let full = self.full(p);
                    json!({
                        "key": http::b64(full.as_bytes()), "range_end": http::b64(&prefix_end(&full)),
                        "target": "CREATE", "result": "EQUAL", "create_revision": "0",
                    })
                }
                Cmp::ValueIs(k, v) => {
                    json!({ "key": self.key_b64(k), "target": "VALUE", "result": "EQUAL", "value": http::b64(v) })
                }
            })
            .collect();
        let success: Vec<Value> = ops
            .iter()
            .map(|op| match op {
                Op::Put(k, v) => json!({ "request_put": { "key": self.key_b64(k), "value": http::b64(v) } }),
                Op::Delete(k) => json!({ "request_delete_range": { "key": self.key_b64(k) } }),
            })
            .collect();
        let r = self.call("/v3/kv/txn", json!({ "compare": compare, "success": success }))?;
        Ok(r["succeeded"].as_bool().unwrap_or(false))
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let r = self.call("/v3/kv/deleterange", json!({ "key": self.key_b64(key) }))?;
        Ok(num(&r["deleted"]) > 0)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let full = self.full(prefix);
        let r = self.call(
            "/v3/kv/range",
            json!({ "key": http::b64(full.as_bytes()), "range_end": http::b64(&prefix_end(&full)) }),
        )?;
        let mut out = Vec::new();
        for kv in r["kvs"].as_array().into_iter().flatten() {
            let key = http::unb64(kv["key"].as_str().unwrap_or("")).unwrap_or_default();
            let key = String::from_utf8_lossy(&key);
            let value = http::unb64(kv["value"].as_str().unwrap_or("")).unwrap_or_default();
            out.push((key.strip_prefix(&self.prefix).unwrap_or(&key).to_string(), value));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn grant_lease(&self, ttl: Duration) -> Result<u64, StoreError> {
        let r = self.call("/v3/lease/grant", json!({ "TTL": ttl.as_secs().max(1) }))?;
        match num(&r["ID"]) {
            0 => Err(self.unavailable(format!("lease grant answered {r}"))),
            id => Ok(id),
        }
    }

    fn keep_alive(&self, lease: u64) -> Result<bool, StoreError> {
        let r = self.call("/v3/lease/keepalive", json!({ "ID": lease.to_string() }))?;
        Ok(num(&r["result"]["TTL"]) > 0)
    }

    fn put_leased(&self, key: &str, value: &[u8], lease: u64) -> Result<(), StoreError> {
        self.put_inner(key, value, lease)
    }

    fn describe(&self) -> String {
        format!("etcd:{}", self.endpoints.iter().map(|e| format!("http://{e}")).collect::<Vec<_>>().join(","))
    }
}
