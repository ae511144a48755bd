//! The whole body path of a push: content negotiation, snappy decompression under the size
//! limit, decoding, the store.
//!
//! Input: one flags byte, then the HTTP body. Flags: bit 0 the shipped default limits
//! (32 MiB) instead of small ones; bits 1-2 the Content-Type (none, RW 2.0, RW 1.0, not
//! protobuf); bits 3-4 the Content-Encoding (snappy, none, " SNAPPY ", gzip). Checks: no
//! panic and no allocation beyond the limit; `Decoder::decode` agrees with decompressing
//! by hand (the reference `snap` decoder, under the same limit) then decoding the message,
//! with a decoder reused across inputs; the store accounts for every sample.
#![no_main]

use std::cell::RefCell;

use deploywatch::ingest::{DecodeError, Decoder, Protocol};
use deploywatch_fuzz::*;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static DECODERS: RefCell<(Decoder, Decoder)> = RefCell::new(Default::default());
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let limits = limits_for(flags);
    let content_type = match (flags >> 1) & 3 {
        0 => None,
        1 => Some("application/x-protobuf;proto=io.prometheus.write.v2.Request"),
        2 => Some("application/x-protobuf"),
        _ => Some("text/plain"),
    };
    let content_encoding = match (flags >> 3) & 3 {
        0 => Some("snappy"),
        1 => None,
        2 => Some(" SNAPPY "),
        _ => Some("gzip"),
    };
    let protocol = match Protocol::negotiate(content_type, content_encoding) {
        Ok(p) => p,
        Err(_) => {
            assert!((flags >> 1) & 3 == 3 || (flags >> 3) & 3 == 3);
            return;
        }
    };
    DECODERS.with(|d| {
        let (decoder, reference) = &mut *d.borrow_mut();
        // The reference: the announced length checked first, then decompression by hand.
        let decompressed = if body.is_empty() || body.len() > limits.max_body_bytes {
            None
        } else {
            match snap::raw::decompress_len(body) {
                Ok(n) if n <= limits.max_body_bytes => {
                    snap::raw::Decoder::new().decompress_vec(body).ok()
                }
                _ => None,
            }
        };
        match decoder.decode(protocol, body, &limits) {
            Err(
                e @ (DecodeError::Empty | DecodeError::TooLarge { .. } | DecodeError::Snappy(_)),
            ) => {
                assert!(
                    decompressed.is_none(),
                    "decompression failed only in decode: {e:?}"
                );
            }
            Err(e) => {
                let m = decompressed.expect("the body decompresses");
                assert_eq!(
                    reference.decode_decompressed(protocol, &m, &limits).err(),
                    Some(e)
                );
            }
            Ok(batch) => {
                let m = decompressed.expect("the body decompresses");
                assert_eq!(
                    batch.buf, m,
                    "decompressed bytes agree (and no stale bytes remain)"
                );
                let r = reference
                    .decode_decompressed(protocol, &m, &limits)
                    .expect("the message decodes by itself");
                r.ensure_all_labels().ok();
                let theirs = (r.series.len(), r.sample_count(), r.extras);
                assert_eq!(
                    (batch.series.len(), batch.sample_count(), batch.extras),
                    theirs
                );
                check_batch_shape(batch);
                ingest_and_check(batch);
            }
        }
    });
});
