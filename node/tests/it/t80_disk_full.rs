//! A node whose data volume fills up refuses new writes with 507 DISK_FULL, keeps serving
//! reads and admin, and takes writes again once space is freed; nothing acknowledged is
//! lost. The volume is a small tmpfs (the tests run as root, as CI does).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::cluster::Cluster;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount")
            .success();
        assert!(ok, "mounting a tmpfs needs root");
        Tmpfs(dir.to_path_buf())
    }

    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_writes_serves_the_rest_and_recovers() {
    let mount = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&mount.path().join("disk"), 64);
    let c = Cluster::start_in(1, &["--min-free-bytes", "16777216"], &disk.0);
    c.wait_leader().await;
    let acked = c.produce_acked(1, "t", "m", 20).await;
    // Fill the volume to 8 MiB free: below the 16 MiB floor.
    let ballast = disk.0.join("ballast");
    let fill = disk.free().saturating_sub(8 << 20);
    std::fs::write(&ballast, vec![0u8; fill as usize]).unwrap();
    // Probes accepted until the watcher has measured the new free space.
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    let refused = c
        .wait_for("produce to be refused with 507", || async {
            let (s, v) = c
                .post(
                    1,
                    "/v1/topics/t/messages",
                    &json!({"messages": [{"body": "x"}]}),
                )
                .await
                .ok()?;
            if s == 200 {
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (s == 507).then_some(v)
        })
        .await;
    assert_eq!(refused["error"]["code"], "DISK_FULL", "{refused}");
    // Reads and admin go on.
    let read = c.read_all(1, "t", 0).await.unwrap();
    let mut all: Vec<String> = read;
    for q in 1..4 {
        all.extend(c.read_all(1, "t", q).await.unwrap());
    }
    all.sort();
    let mut want = acked.clone();
    want.extend((0..accepted.into_inner()).map(|_| "x".to_owned()));
    want.sort();
    assert_eq!(all, want, "every acknowledged message is still readable");
    let (s, v) = c
        .send(
            reqwest::Method::PUT,
            1,
            "/v1/topics/other",
            &json!({"queues": 1}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "admin works on a full disk: {v}");
    // Space comes back: so do writes.
    std::fs::remove_file(&ballast).unwrap();
    c.wait_for("produce to work again", || async {
        c.produce(1, "t", "after").await
    })
    .await;
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_disk_fills_stops_and_the_group_goes_on() {
    let root = tempfile::tempdir().unwrap();
    // Only node 3's data directory is on a small volume.
    let disk = Tmpfs::mount(&root.path().join("node3"), 32);
    let mut c = Cluster::start_in(3, &["--min-free-bytes", "0"], root.path());
    c.wait_leader().await;
    c.make_leader(1).await;
    let mut acked = c.produce_acked(1, "t", "before", 10).await;
    std::fs::write(disk.0.join("ballast"), vec![0u8; disk.free() as usize]).ok();
    // Writes of 64 KiB each: node 3 runs out of space on the first few.
    let big = "y".repeat(64 << 10);
    for i in 0..40 {
        let body = format!("full{i}-{big}");
        c.produce(1, "t", &body)
            .await
            .expect("two of three nodes take every write");
        acked.push(body);
    }
    c.wait_for("node 3 to report not ready", || async {
        let (s, _) = c.get(3, "/readyz").await.ok()?;
        (s == 503).then_some(())
    })
    .await;
    // Freed and restarted, it catches up with everything.
    std::fs::remove_file(disk.0.join("ballast")).unwrap();
    c.restart(3);
    let mut want = acked.clone();
    want.sort();
    c.wait_for("node 3 to serve every acknowledged message", || async {
        let mut all = Vec::new();
        for q in 0..4 {
            all.extend(c.read_all(3, "t", q).await?);
        }
        all.sort();
        (all == want).then_some(())
    })
    .await;
    drop(c);
}
