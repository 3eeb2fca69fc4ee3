//! Tests of the cleanup (`mod.rs`, `ledger.rs`) on a real local store.
use super::*;
use crate::lfs::store::BlobStore;
use bytes::Bytes;

const CHUNK: usize = 5 * 1024 * 1024;

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out.sort();
    out
}

fn value(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

#[tokio::test]
async fn shutdown_aborts_an_upload_in_flight_and_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path(), CHUNK).unwrap();
    let mut writer = store.writer("ns/t/lfs/2026/12/02/obj-a");
    writer.write(value(2 * CHUNK + 1)).await.unwrap();
    assert_eq!(store.cleanup().in_flight(), 1);
    assert_eq!(
        files(dir.path()).len(),
        1,
        "one staging file: {:?}",
        files(dir.path())
    );

    let flushed = store.cleanup().finish(Duration::from_secs(5)).await;
    assert_eq!(
        flushed,
        Flushed {
            removed: 1,
            recorded: 0,
            lost: 0
        }
    );
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    // The cut writer cannot complete, and leaves nothing when it gives up.
    assert!(writer.finish().await.is_err());
    assert!(files(dir.path()).is_empty());
    let refused = store
        .put("ns/t/lfs/2026/12/02/obj-b", value(CHUNK + 1))
        .await;
    assert!(
        matches!(refused, Err(crate::lfs::store::StoreError::Closed(_))),
        "{refused:?}"
    );
    assert!(files(dir.path()).is_empty());
}

#[tokio::test]
async fn a_writer_dropped_mid_upload_is_aborted_by_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path(), CHUNK).unwrap();
    let mut writer = store.writer("ns/t/lfs/2026/12/02/obj-c");
    writer.write(value(CHUNK + 1)).await.unwrap();
    drop(writer);
    assert_eq!(store.cleanup().in_flight(), 0);
    assert_eq!(
        store.cleanup().queued(),
        1,
        "the cut upload waits for its abort"
    );
    store
        .cleanup()
        .lock()
        .queue
        .iter_mut()
        .for_each(|q| q.due = Instant::now());
    store.cleanup().retry_due().await;
    assert_eq!(store.cleanup().queued(), 0);
    // object_store's own drop may have removed the file first; either way none is left.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
}

#[tokio::test]
async fn the_ledger_is_finished_by_the_next_start_and_spares_rewritten_objects() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path(), CHUNK).unwrap();
    store
        .put("ns/t/lfs/2026/12/02/obj-old", Bytes::from_static(b"orphan"))
        .await
        .unwrap();
    let orphan = Leftover::object("ns/t/lfs/2026/12/02/obj-old");
    // Left an hour ago; written again since (an idempotent retry): kept.
    let rewritten = Leftover::Object {
        key: "ns/t/lfs/2026/12/02/obj-new".into(),
        left_at_ms: chrono::Utc::now().timestamp_millis() - 3_600_000,
    };
    store
        .put("ns/t/lfs/2026/12/02/obj-new", Bytes::from_static(b"live"))
        .await
        .unwrap();
    let gone_upload = Leftover::Staging {
        key: "ns/t/lfs/2026/12/02/obj-gone".into(),
    };
    let entries = vec![orphan, rewritten, gone_upload];
    let backend = &store.cleanup().backend;
    let place = ledger::record(
        backend,
        None,
        &entries,
        Instant::now() + Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(place.starts_with("store:_lfs_pending/pending-"), "{place}");

    // A new process on the same store.
    let next = BlobStore::local(dir.path(), CHUNK).unwrap();
    let waiting = ledger::finish_recorded(&next.cleanup().backend, None)
        .await
        .unwrap();
    assert_eq!(waiting, 0);
    let left = next.list("").await.unwrap();
    assert_eq!(
        left,
        vec!["ns/t/lfs/2026/12/02/obj-new".to_string()],
        "orphan deleted, ledger gone"
    );
}

#[tokio::test]
async fn a_ledger_in_the_fallback_directory_is_finished_too() {
    let dir = tempfile::tempdir().unwrap();
    let fallback = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path(), CHUNK).unwrap();
    store
        .put("ns/t/lfs/2026/12/02/obj-x", Bytes::from_static(b"x"))
        .await
        .unwrap();
    // Written to the fallback as if the store had refused it.
    let ledger_dir = fallback.path().join(ledger::LEDGER_PREFIX);
    std::fs::create_dir_all(&ledger_dir).unwrap();
    let entries = vec![Leftover::object("ns/t/lfs/2026/12/02/obj-x")];
    std::fs::write(
        ledger_dir.join("pending-1.json"),
        serde_json::to_vec(&entries).unwrap(),
    )
    .unwrap();
    let waiting = ledger::finish_recorded(&store.cleanup().backend, Some(fallback.path()))
        .await
        .unwrap();
    assert_eq!(waiting, 0);
    assert!(store.list("ns").await.unwrap().is_empty());
    assert!(files(fallback.path()).is_empty());
}

#[test]
fn leftovers_keep_their_json_form() {
    let json = serde_json::to_string(&Leftover::Multipart {
        key: "ns/t/lfs/2026/12/02/obj-a".into(),
        upload_id: "abc".into(),
    })
    .unwrap();
    assert_eq!(
        json,
        r#"{"kind":"multipart","key":"ns/t/lfs/2026/12/02/obj-a","upload_id":"abc"}"#
    );
}
