//! A value written in pieces (a Kafka record value, an HTTP body). Until
//! more than one chunk has arrived it is held (a small value is one PUT);
//! after that it is a multipart upload of parts of exactly `chunk_size`
//! bytes (the last may be shorter), with at most `MAX_PARTS_IN_FLIGHT`
//! uploading at once. Pieces are sliced into parts, never copied.
//!
//! Always end a writer with [`BlobWriter::finish`] or [`BlobWriter::abort`];
//! a writer dropped without either (its request was cut) hands its upload
//! to the cleanup, which aborts it.

use bytes::Bytes;
use object_store::PutPayload;

use super::multipart::Multipart;
use super::store::{BlobStore, StoreError, MAX_PARTS_IN_FLIGHT};

pub struct BlobWriter {
    store: BlobStore,
    key: String,
    chunk_size: usize,
    /// Bytes not yet handed to a part (at most one chunk).
    held: Vec<Bytes>,
    held_len: usize,
    multipart: Option<Multipart>,
}

impl BlobWriter {
    pub(super) fn new(store: BlobStore, key: &str, chunk_size: usize) -> Self {
        BlobWriter {
            store,
            key: key.to_owned(),
            chunk_size: chunk_size.max(1),
            held: Vec::new(),
            held_len: 0,
            multipart: None,
        }
    }

    pub async fn write(&mut self, mut data: Bytes) -> Result<(), StoreError> {
        while !data.is_empty() {
            if self.held_len == self.chunk_size {
                // More than one chunk: this is a multipart upload.
                self.send_held().await?;
            }
            let take = (self.chunk_size - self.held_len).min(data.len());
            self.held.push(data.split_to(take));
            self.held_len += take;
        }
        Ok(())
    }

    /// Hands the held chunk to the upload, waiting for room first.
    async fn send_held(&mut self) -> Result<(), StoreError> {
        if self.multipart.is_none() {
            self.multipart = Some(self.store.start_multipart(&self.key).await?);
        }
        let upload = self.multipart.as_mut().expect("started above");
        upload.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await?;
        let payload: PutPayload = std::mem::take(&mut self.held).into_iter().collect();
        self.held_len = 0;
        upload.put_part(payload);
        Ok(())
    }

    /// Completes the object. A failed multipart upload is aborted.
    pub async fn finish(mut self) -> Result<(), StoreError> {
        let Some(mut upload) = self.multipart.take() else {
            let payload: PutPayload = std::mem::take(&mut self.held).into_iter().collect();
            return self.store.put_payload(&self.key, payload).await;
        };
        if self.held_len > 0 {
            if let Err(e) = upload.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await {
                upload.abort().await;
                return Err(e);
            }
            let payload: PutPayload = std::mem::take(&mut self.held).into_iter().collect();
            upload.put_part(payload);
        }
        upload.complete().await
    }

    /// Drops what was written; nothing is left in storage (an abort storage
    /// does not answer is retried by the cleanup).
    pub async fn abort(mut self) {
        if let Some(upload) = self.multipart.take() {
            upload.abort().await;
        }
    }
}
