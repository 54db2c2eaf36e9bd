//! Our importer against implementations nobody here wrote: npm `ipfs-unixfs-importer` set up
//! like Kubo (CIDs and DAG sizes), and `ipfs-car` (reads our CARs, writes CARs we read).
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::io::BufReader;
use std::process::Command;

use common::{node, prng_bytes, repo_root};
use khachapuri_ipfs::{
    CHUNK_SIZE, Fetcher, FsBlockstore, MAX_LINKS, Source, car, cid_for, import_reader,
};

const C: usize = CHUNK_SIZE;

#[test]
fn cids_match_ipfs_unixfs_importer() {
    let dir = tempfile::tempdir().unwrap();
    let mut sizes = vec![
        0,
        1,
        C - 1,
        C,
        C + 1,
        MAX_LINKS * C - 1,
        MAX_LINKS * C,
        MAX_LINKS * C + 1,
        2 * MAX_LINKS * C + 3 * C + 7, // two levels, three level-1 nodes, last one partial
    ];
    // random sizes from a fixed seed, one of them past 100 MiB
    let r = prng_bytes(42, 32);
    for i in 0..3 {
        sizes.push(
            u32::from_le_bytes(r[i * 4..i * 4 + 4].try_into().unwrap()) as usize % (12 << 20),
        );
    }
    sizes.push((100 << 20) + u16::from_le_bytes([r[20], r[21]]) as usize);

    let mut ours = Vec::new();
    let mut paths = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let path = dir.path().join(format!("f{i}"));
        std::fs::write(&path, prng_bytes(i as u64, size)).unwrap();
        let imported =
            import_reader(BufReader::new(File::open(&path).unwrap()), Vec::new()).unwrap();
        assert_eq!(imported.size, size as u64);
        ours.push(format!("{} {}", imported.cid, imported.dag_size));
        paths.push(path.to_string_lossy().into_owned());
    }
    let theirs: Vec<String> = node("import.mjs", &paths)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(theirs.len(), sizes.len());
    for ((size, ours), theirs) in sizes.iter().zip(&ours).zip(&theirs) {
        assert_eq!(ours, theirs, "CID and DAG size for a {size}-byte file");
    }
    // the empty file is the empty raw block, as Kubo gives it
    assert!(ours[0].starts_with("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku "));
}

fn ipfs_car(args: &[&str]) -> String {
    let bin = repo_root().join("node_modules/.bin/ipfs-car");
    let out = Command::new(&bin)
        .args(args)
        .output()
        .expect("ipfs-car runs");
    assert!(
        out.status.success(),
        "ipfs-car {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn ipfs_car_unpacks_our_car() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path().join("store")).unwrap();
    let data = prng_bytes(7, 3 * C + 1234);
    let root = store.put(&data).unwrap().cid;
    let car_path = dir.path().join("ours.car");
    car::export(&store, &root, File::create(&car_path).unwrap()).unwrap();

    let car = car_path.to_string_lossy().into_owned();
    assert_eq!(ipfs_car(&["roots", &car]).trim(), root.to_string());
    let out = dir.path().join("unpacked");
    ipfs_car(&["unpack", &car, "--output", &out.to_string_lossy()]);
    assert_eq!(std::fs::read(&out).unwrap(), data);
}

#[tokio::test]
async fn we_read_ipfs_car_output() {
    let dir = tempfile::tempdir().unwrap();
    // ipfs-car uses its own layout (1 MiB chunks, wider nodes): a good test of our reader
    let data = prng_bytes(9, 5 * C + 99);
    let file = dir.path().join("input.bin");
    std::fs::write(&file, &data).unwrap();
    let car_path = dir.path().join("theirs.car");
    ipfs_car(&[
        "pack",
        &file.to_string_lossy(),
        "--no-wrap",
        "--output",
        &car_path.to_string_lossy(),
    ]);

    let store = FsBlockstore::open(dir.path().join("store")).unwrap();
    let roots = car::import(&store, File::open(&car_path).unwrap()).unwrap();
    assert_eq!(roots.len(), 1);
    let got = Fetcher::new(vec![Source::Local(store)])
        .get(&roots[0], 10 << 20)
        .await
        .unwrap();
    assert_eq!(got, data);
    assert_ne!(
        roots[0],
        cid_for(&data),
        "ipfs-car's layout differs from Kubo's, as expected"
    );
}
