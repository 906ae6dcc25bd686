//! `weft lab down` removes everything a lab created, found by name, even when
//! the lab's own record is gone (a crashed `lab up`, a killed test).

use std::path::Path;
use weft_e2e::TestLab;

#[test]
fn lab_down_finds_leftovers_without_the_lab_record() {
    let lab = TestLab::up("crash", 2, 1);
    let name = lab.name().to_string();
    let pids: Vec<u32> = lab.lab.nodes.iter().map(|n| n.pid).collect();
    // Forget the record, as if `lab up` had crashed before writing it.
    std::fs::remove_file(weft_lab::layout::dir(&name).join("lab.json")).unwrap();
    let removed = weft_lab::down(&name).unwrap();
    assert!(removed.len() >= 2 + 5, "{removed:?}");
    assert!(weft_net::netns::list(&weft_lab::layout::prefix(&name)).is_empty(), "namespaces left");
    assert!(!weft_lab::layout::bpffs(&name).exists(), "pins left");
    assert!(!weft_lab::layout::dir(&name).exists(), "run directory left");
    std::thread::sleep(std::time::Duration::from_millis(200));
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || stat.contains(") Z"), "agent {pid} survived");
    }
    // A second down finds nothing and still succeeds.
    assert!(weft_lab::down(&name).unwrap().is_empty());
    drop(lab);
}
