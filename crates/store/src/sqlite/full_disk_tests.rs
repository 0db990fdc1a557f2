//! A full disk: writes are refused as `StorageFull` (never a generic failure), a refused
//! write leaves nothing behind and an acknowledged one is all there, and the store notices
//! by itself when space is back. Needs root (to mount a small tmpfs); skipped otherwise.

use std::io::Write;
use std::process::Command;

use super::tests::{app, endpoint, message};
use super::*;

/// A tmpfs of `size` mounted on a temp dir, unmounted when dropped (also on a panic).
pub(crate) struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (and a line saying so) when not root or the mount fails.
    pub(crate) fn mount(size: &str) -> Option<Self> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let dir = tempfile::tempdir().expect("tempdir");
        let mounted = root
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: needs root to mount a tmpfs");
            return None;
        }
        Some(Self { dir })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `filler` until the disk has no room left.
    pub(crate) fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).expect("create filler");
        let chunk = vec![0u8; 64 * 1024];
        loop {
            if let Err(e) = f.write_all(&chunk) {
                assert!(is_no_space(&e), "filling the disk: {e}");
                return filler;
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn event(m: &str, size: usize) -> Message {
    let mut msg = message(m);
    msg.event_id = Some(new_id("evt"));
    msg.payload = format!("{{\"pad\":\"{}\"}}", "x".repeat(size)).into();
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_whole_and_recovers_by_itself() {
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    let store = Arc::new(SqliteStore::open(fs.path().join("db.sqlite")).unwrap());
    let a = store.create_app(app(None)).await.unwrap();
    store.create_endpoint(endpoint(&a.id, 8)).await.unwrap();
    let filler = fs.fill();
    assert!(no_room(&fs.path().join("db.sqlite")));

    // Concurrent creates, so that groups carry several writes; the first few may still
    // fit in space the WAL already has. One in each batch is larger than SQLite's page
    // cache: it spills pages to the WAL before its commit, and a spill that finds the disk
    // full makes SQLite roll back the whole transaction, with the group's other writes.
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..40 {
        let mut tasks = Vec::new();
        for k in 0..32 {
            let store = store.clone();
            let msg = event(&a.id, if k == 16 { 3 << 20 } else { 3000 });
            tasks.push(tokio::spawn(async move {
                let id = msg.event_id.clone().unwrap();
                (id, store.create_message(msg).await)
            }));
        }
        for t in tasks {
            match t.await.unwrap() {
                (id, Ok(_)) => accepted.push(id),
                (id, Err(StoreError::StorageFull(_))) => refused.push(id),
                (_, Err(e)) => panic!("a full disk must refuse as StorageFull, got: {e:?}"),
            }
        }
        if refused.len() >= 64 {
            break;
        }
    }
    assert!(!refused.is_empty(), "the disk never filled up");
    eprintln!(
        "{} creates accepted, {} refused on the full disk",
        accepted.len(),
        refused.len()
    );
    assert!(store.storage_full(), "the store knows the disk is full");

    // Space comes back: the store finds out by itself, without a write from outside.
    std::fs::remove_file(&filler).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.storage_full() {
        assert!(
            std::time::Instant::now() < deadline,
            "still full 10 s after space came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let after = event(&a.id, 3000);
    let after_id = after.event_id.clone().unwrap();
    store.create_message(after).await.unwrap();
    accepted.push(after_id);

    // Whole or nothing: every acknowledged message is there with its delivery; no refused
    // one is, not even in part.
    for id in &accepted {
        let msg = store.get_message(&a.id, id).await.unwrap();
        let msg = msg.unwrap_or_else(|| panic!("acknowledged message {id} is missing"));
        let deliveries = store
            .list_message_deliveries(
                &a.id,
                &msg.id,
                &ListQuery {
                    limit: 10,
                    ..ListQuery::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(deliveries.data.len(), 1, "message {id} lost its delivery");
    }
    for id in &refused {
        assert!(
            store.get_message(&a.id, id).await.unwrap().is_none(),
            "refused message {id} was stored anyway"
        );
    }
}
