//! Pod CIDR blocks handed to nodes from the cluster pool (Cilium's
//! cluster-pool IPAM). A block is claimed by creating `cidrs/<block>` with
//! the node's name as value, so two nodes racing for one block cannot both
//! win; a node that restarts finds its block again by name. Blocks are not
//! leased: a node that is down keeps its pods' addresses.

use crate::{Store, StoreError};
use weft_ipam::Cidr;

fn key(block: &Cidr) -> String {
    format!("cidrs/{}-{}", block.addr, block.prefix)
}

/// The blocks of `pool` with prefix `block_prefix`, in order.
pub fn blocks(pool: Cidr, block_prefix: u8) -> impl Iterator<Item = Cidr> {
    let n = if block_prefix >= pool.prefix { 1u64 << (block_prefix - pool.prefix) } else { 0 };
    let step = 1u64 << (32 - block_prefix);
    (0..n).map(move |i| Cidr {
        addr: std::net::Ipv4Addr::from((u32::from(pool.network()) as u64 + i * step) as u32),
        prefix: block_prefix,
    })
}

/// The block this node holds, claiming the first free one if it has none.
pub fn claim(store: &dyn Store, pool: Cidr, block_prefix: u8, node: &str) -> Result<Cidr, StoreError> {
    if let Some(b) = held_by(store, node)? {
        return Ok(b);
    }
    for block in blocks(pool, block_prefix) {
        if store.create(&key(&block), node.as_bytes())? {
            return Ok(block);
        }
    }
    Err(StoreError::Unavailable {
        backend: store.describe(),
        cause: format!(
            "every /{block_prefix} block of the cluster pool {pool} is taken; grow the pool or remove nodes"
        ),
    })
}

/// Claims a block chosen by the operator; fails if another node has it.
pub fn claim_exact(store: &dyn Store, block: Cidr, node: &str) -> Result<Cidr, StoreError> {
    if store.create(&key(&block), node.as_bytes())? {
        return Ok(block);
    }
    match store.get(&key(&block))? {
        Some(owner) if owner == node.as_bytes() => Ok(block),
        owner => Err(StoreError::Unavailable {
            backend: store.describe(),
            cause: format!(
                "pod CIDR {block} belongs to node {}; choose another --pod-cidr",
                String::from_utf8_lossy(&owner.unwrap_or_default())
            ),
        }),
    }
}

pub fn held_by(store: &dyn Store, node: &str) -> Result<Option<Cidr>, StoreError> {
    for (k, v) in store.list("cidrs/")? {
        if v == node.as_bytes() {
            let spec = k.trim_start_matches("cidrs/").replacen('-', "/", 1);
            if let Ok(c) = spec.parse() {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// Gives a node's block back (the node was removed for good).
pub fn release(store: &dyn Store, block: Cidr) -> Result<(), StoreError> {
    store.delete(&key(&block)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStore;

    #[test]
    fn blocks_claims_and_reclaims() {
        let d = std::env::temp_dir().join(format!("weft-pool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let s = LocalStore::open(&d).unwrap();
        let pool: Cidr = "10.244.0.0/22".parse().unwrap();
        let b: Vec<String> = blocks(pool, 24).map(|c| c.to_string()).collect();
        assert_eq!(b, ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]);
        assert_eq!(claim(&s, pool, 24, "a").unwrap().to_string(), "10.244.0.0/24");
        assert_eq!(claim(&s, pool, 24, "b").unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(claim(&s, pool, 24, "a").unwrap().to_string(), "10.244.0.0/24", "stable for a node");
        assert!(claim_exact(&s, "10.244.1.0/24".parse().unwrap(), "c").is_err());
        assert_eq!(
            claim_exact(&s, "10.244.3.0/24".parse().unwrap(), "c").unwrap().to_string(),
            "10.244.3.0/24"
        );
        claim(&s, pool, 24, "d").unwrap();
        let e = claim(&s, pool, 24, "e").unwrap_err().to_string();
        assert!(e.contains("every /24 block"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
