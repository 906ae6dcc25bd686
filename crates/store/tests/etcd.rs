//! The etcd backend against a real etcd (Debian's etcd-server), started by
//! the test inside a network namespace of its own.

mod common;

use common::{Etcd, URL, urls};
use std::{sync::Arc, time::Duration};
use weft_store::{Cmp, EtcdStore, Op, Store, identity::IdentityAllocator};

#[test]
fn kv_semantics_match_the_local_backend() {
    let etcd = Etcd::start("kv");
    etcd.run(|s| {
        s.put("endpoints/n1/c1/eth0", b"1")?;
        s.put("endpoints/n1/c2/eth0", b"2")?;
        s.put("endpoints/n2/c3/eth0", b"3")?;
        s.put("endpointsX", b"not under the prefix")?;
        assert_eq!(s.get("endpoints/n1/c1/eth0")?.unwrap(), b"1");
        assert_eq!(s.get("endpoints/none")?, None);
        let keys: Vec<String> = s.list("endpoints/n1/")?.into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["endpoints/n1/c1/eth0", "endpoints/n1/c2/eth0"]);
        assert_eq!(s.list("endpoints/")?.len(), 3);
        assert!(!s.create("endpoints/n1/c1/eth0", b"x")?);
        assert!(s.create("cidrs/10.244.1.0-24", b"node1")?);
        assert!(s.delete("endpoints/n1/c1/eth0")?);
        assert!(!s.delete("endpoints/n1/c1/eth0")?);
        assert_eq!(s.describe(), "etcd:http://127.0.0.1:2379");
        // Transactions: what identity references are built on.
        let put = |k: &str| Op::Put(k.into(), b"v".to_vec());
        assert!(s.txn(&[Cmp::PrefixEmpty("refs/1/".into())], &[put("ids/1")])?, "empty prefix holds");
        s.put("refs/1/n1/a", b"")?;
        assert!(!s.txn(&[Cmp::PrefixEmpty("refs/1/".into())], &[Op::Delete("ids/1".into())])?);
        assert!(s.txn(&[Cmp::PrefixEmpty("refs/10/".into())], &[])?, "refs/10/ is not under refs/1/");
        assert!(!s.txn(&[Cmp::ValueIs("ids/1".into(), b"w".to_vec())], &[put("x")])?);
        assert!(!s.txn(&[Cmp::ValueIs("ids/2".into(), b"v".to_vec())], &[put("x")])?, "absent is not equal");
        assert_eq!(s.get("x")?, None, "failed txns write nothing");
        assert!(s.txn(
            &[Cmp::ValueIs("ids/1".into(), b"v".to_vec()), Cmp::Absent("x".into())],
            &[put("x"), Op::Delete("refs/1/n1/a".into())]
        )?);
        assert_eq!(s.get("x")?.unwrap(), b"v");
        assert!(s.txn(&[Cmp::PrefixEmpty("refs/1/".into())], &[Op::Delete("ids/1".into())])?);
        assert_eq!(s.get("ids/1")?, None);
        Ok(())
    })
    .unwrap();
}

#[test]
fn identity_release_racing_acquires_on_another_node_never_frees_a_used_number() {
    let etcd = Etcd::start("relrace");
    etcd.run(|s| {
        for round in 0..20 {
            let labels = vec![format!("k8s:round={round}")];
            let a = IdentityAllocator::new(s.clone());
            let first = a.acquire(&labels, "n1/10.244.1.2")?;
            let b = IdentityAllocator::new(Arc::new(EtcdStore::new(&urls(URL), "/weft-test/", None)?));
            let l2 = labels.clone();
            let h = std::thread::spawn(move || b.acquire(&l2, "n2/10.244.2.2"));
            a.release(first, "n1/10.244.1.2")?;
            let second = h.join().unwrap()?;
            assert_eq!(a.lookup(second)?, Some(labels.clone()), "round {round}: n2's number exists");
            assert_eq!(a.refs_of("n2/")?, vec![(second, "n2/10.244.2.2".to_string())]);
            a.release(second, "n2/10.244.2.2")?;
            assert_eq!(a.lookup(second)?, None);
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn racing_creates_have_exactly_one_winner() {
    let etcd = Etcd::start("race");
    for round in 0..5 {
        let wins = etcd
            .run(move |s| {
                let hs: Vec<_> = (0..8)
                    .map(|t| {
                        let s = s.clone();
                        std::thread::spawn(move || {
                            (0..10)
                                .filter(|k| {
                                    s.create(&format!("race/{round}/{k}"), format!("{t}").as_bytes()).unwrap()
                                })
                                .count()
                        })
                    })
                    .collect();
                Ok(hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>())
            })
            .unwrap();
        assert_eq!(wins, 10, "round {round}: every key has exactly one winner");
    }
}

#[test]
fn two_agents_allocating_identities_never_collide() {
    let etcd = Etcd::start("ident");
    for round in 0..3 {
        let results = etcd
            .run(move |s| {
                let hs: Vec<_> = (0..2)
                    .map(|agent| {
                        // Each "agent" has its own client, as two nodes would.
                        let a = IdentityAllocator::new(Arc::new(
                            EtcdStore::new(&urls(URL), "/weft-test/", None).unwrap(),
                        ));
                        let _ = &s;
                        std::thread::spawn(move || {
                            (0..15)
                                .map(|i| {
                                    let set = (i + agent * 7) % 15;
                                    (
                                        set,
                                        a.acquire(
                                            &[format!("k8s:round={round}"), format!("k8s:set={set}")],
                                            &format!("n{agent}/{i}"),
                                        )
                                        .unwrap(),
                                    )
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                Ok(hs.into_iter().flat_map(|h| h.join().unwrap()).collect::<Vec<_>>())
            })
            .unwrap();
        let mut by_set = std::collections::BTreeMap::new();
        for (set, id) in results {
            assert_eq!(*by_set.entry(set).or_insert(id), id, "round {round}: one label set, one identity");
        }
        let ids: std::collections::HashSet<_> = by_set.values().collect();
        assert_eq!(ids.len(), 15, "round {round}: one identity, one label set");
        assert!(ids.iter().all(|i| **i >= 256));
    }
}

#[test]
fn leased_keys_vanish_when_not_renewed() {
    let etcd = Etcd::start("lease");
    etcd.run(|s| {
        let lease = s.grant_lease(Duration::from_secs(2))?;
        s.put_leased("nodes/node1", b"{}", lease)?;
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(700));
            assert!(s.keep_alive(lease)?);
        }
        assert!(s.get("nodes/node1")?.is_some(), "kept alive");
        std::thread::sleep(Duration::from_secs(4));
        assert!(s.get("nodes/node1")?.is_none(), "gone after the lease ran out");
        assert!(!s.keep_alive(lease)?, "an expired lease cannot be renewed");
        Ok(())
    })
    .unwrap();
}

#[test]
fn unreachable_etcd_is_a_clear_error() {
    let etcd = Etcd::start("down");
    // A port nothing listens on, inside the test's namespace.
    let e = etcd
        .run(|_| {
            Ok(EtcdStore::new(&urls("http://127.0.0.1:1"), "/weft/", None)
                .unwrap()
                .get("x")
                .unwrap_err()
                .to_string())
        })
        .unwrap();
    assert!(e.contains("etcd http://127.0.0.1:1") && e.contains("unavailable"), "{e}");
    assert!(e.contains("refused"), "the cause is told: {e}");
    // With a dead member first, requests go on to the next one.
    let got = etcd
        .run(|_| {
            let members = vec!["http://127.0.0.1:1".to_string(), URL.to_string()];
            let s = EtcdStore::new(&members, "/weft-test/", None)?;
            s.put("failover", b"1")?;
            s.get("failover")
        })
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"1"[..]));
    let e = EtcdStore::new(&urls("https://x:2379"), "/w/", None).err().unwrap().to_string();
    assert!(e.contains("is https") && e.contains("CA"), "{e}");
    let e = EtcdStore::new(&urls("x:2379"), "/w/", None).err().unwrap().to_string();
    assert!(e.contains("http://HOST:PORT"), "{e}");
}

#[test]
fn nodes_racing_for_pod_cidrs_never_collide() {
    let etcd = Etcd::start("cidr");
    for round in 0..5 {
        let got = etcd
            .run(move |_| {
                let pool: weft_ipam::Cidr = format!("10.{}.0.0/16", 100 + round).parse().unwrap();
                let hs: Vec<_> = (0..6)
                    .map(|n| {
                        let s = EtcdStore::new(&urls(URL), "/weft-test/", None).unwrap();
                        std::thread::spawn(move || {
                            weft_store::pool::claim(&s, pool, 24, &format!("r{round}-node{n}")).unwrap()
                        })
                    })
                    .collect();
                Ok(hs.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>())
            })
            .unwrap();
        let distinct: std::collections::HashSet<_> = got.iter().collect();
        assert_eq!(distinct.len(), 6, "round {round}: {got:?}");
    }
    // Stable across restarts: the same node name finds its block again.
    let again = etcd
        .run(|s| weft_store::pool::claim(s.as_ref(), "10.100.0.0/16".parse().unwrap(), 24, "r0-node3"))
        .unwrap();
    let held = etcd.run(|s| weft_store::pool::held_by(s.as_ref(), "r0-node3")).unwrap();
    assert_eq!(Some(again), held);
}

#[test]
fn a_listing_larger_than_one_grpc_message_comes_whole_at_one_revision() {
    let etcd = Etcd::start("big");
    etcd.run(|s| {
        // 2,600 records of 2 KB: 5 MB, more than gRPC's 4 MiB per answer.
        let value = vec![b'x'; 2048];
        for chunk in (0..2600).collect::<Vec<_>>().chunks(100) {
            let ops: Vec<Op> =
                chunk.iter().map(|i| Op::Put(format!("endpoints/n/{i:05}"), value.clone())).collect();
            assert!(s.txn(&[], &ops)?);
        }
        s.put("endpointz", b"outside the prefix")?;
        let (items, rev) = s.list_at("endpoints/")?;
        assert_eq!(items.len(), 2600);
        assert!(items.windows(2).all(|w| w[0].0 < w[1].0), "sorted, no duplicates");
        assert_eq!(items[2599].0, "endpoints/n/02599");
        // The listing's revision is the one to watch from: nothing before.
        let mut w = s.watch("endpoints/", rev + 1)?;
        s.put("endpoints/n/late", b"1")?;
        let events = w.next(Duration::from_secs(5)).map_err(|e| weft_store::StoreError::Unavailable {
            backend: "watch".into(),
            cause: e.to_string(),
        })?;
        assert_eq!(events.len(), 1, "{events:?}");
        Ok(())
    })
    .unwrap();
}
