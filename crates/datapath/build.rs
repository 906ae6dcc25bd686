//! Compiles every `bpf/*.c` into a BPF object with clang, so the objects are
//! embedded into the binaries and no compiler is needed at run time.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../bpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let clang = env::var("WEFT_CLANG").unwrap_or_else(|_| "clang".into());
    println!("cargo:rerun-if-env-changed=WEFT_CLANG");
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-changed={}", root.join("lib").display());
    for dir in [&root, &root.join("lib"), &root.join("tests")] {
        for entry in std::fs::read_dir(dir).expect("bpf/ is missing") {
            println!("cargo:rerun-if-changed={}", entry.unwrap().path().display());
        }
    }
    let multiarch = format!("/usr/include/{}-linux-gnu", env::var("CARGO_CFG_TARGET_ARCH").unwrap());
    // Programs, the BTF-only layout object, and test-only probe wrappers.
    let objects =
        ["lxc", "host", "overlay", "netdev", "sock", "layout", "tests/probe_lxc", "tests/probe_overlay"];
    for prog in objects {
        let src = root.join(format!("{prog}.c"));
        let obj = out.join(format!("{}.o", prog.trim_start_matches("tests/")));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror"])
            .arg(format!("-I{multiarch}"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run {clang} ({e}): install clang and libbpf-dev (`make deps`)")
            });
        assert!(status.success(), "clang failed on {}", src.display());
    }
}
