//! The message batch: how a produce request's messages are encoded, once, into one
//! CommitLog payload, and read back without copying bodies.
//!
//! ```text
//! batch   = version u8 (=1) | store_ms u64 | topic_len u8 | topic | count u32 | message*count
//! message = len u32 (bytes that follow) | flags u8 | queue u32 | born_ms u64
//!           | [deliver_at_ms u64]          if flags & DELIVER_AT
//!           | [key_len u16 | key]          if flags & KEY
//!           | [tag_len u16 | tag]          if flags & TAG
//!           | [idem_len u16 | idempotency key] if flags & IDEMPOTENT
//!           | prop_count u16 | (k_len u16 | k | v_len u32 | v)*prop_count
//!           | body                         (the rest of the message)
//! ```
//! Integers are little-endian; strings are UTF-8. A message's log position (log index, slot
//! in batch) is its identity, so the encoding carries no id. `docs/commitlog-format.md`
//! is the normative description.
//!
//! Must never: allocate per message while decoding (views borrow the payload), or accept
//! unknown flags (a newer format must fail loudly, not be half-read).

use crate::error::{Result, StorageError, malformed};

/// Current batch format version.
pub const BATCH_VERSION: u8 = 1;

const FLAG_KEY: u8 = 1;
const FLAG_TAG: u8 = 2;
const FLAG_BINARY: u8 = 4;
const FLAG_DELIVER_AT: u8 = 8;
const FLAG_IDEMPOTENT: u8 = 16;
const KNOWN_FLAGS: u8 = FLAG_KEY | FLAG_TAG | FLAG_BINARY | FLAG_DELIVER_AT | FLAG_IDEMPOTENT;

/// One message to encode.
#[derive(Clone, Copy, Debug, Default)]
pub struct MessageIn<'a> {
    /// The queue chosen for it (by the leader, before the batch is proposed).
    pub queue: u32,
    /// When the producer made it (ms since the epoch).
    pub born_ms: u64,
    /// Not deliverable before this time (delayed message).
    pub deliver_at_ms: Option<u64>,
    /// Business key (key index, queue hashing).
    pub key: Option<&'a str>,
    /// Tag for server-side filtering.
    pub tag: Option<&'a str>,
    /// The producer's key for exactly-once produce (per topic, within the dedup window).
    pub idempotency_key: Option<&'a str>,
    /// Whether the body was given as base64 (and must be returned as base64).
    pub binary: bool,
    /// The body.
    pub body: &'a [u8],
}

/// Writes a batch into a caller-owned buffer (reuse it across batches).
#[derive(Debug)]
pub struct BatchEncoder<'b> {
    buf: &'b mut Vec<u8>,
    count_at: usize,
    count: u32,
}

fn put_str16(buf: &mut Vec<u8>, what: &str, s: &str) -> Result<()> {
    let len = u16::try_from(s.len())
        .map_err(|_| StorageError::InvalidArgument(format!("{what} is longer than 65535 bytes")))?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
    Ok(())
}

impl<'b> BatchEncoder<'b> {
    /// Starts a batch for `topic`, stored at `store_ms` (the leader's clock).
    pub fn new(buf: &'b mut Vec<u8>, topic: &str, store_ms: u64) -> Result<Self> {
        let topic_len = u8::try_from(topic.len())
            .map_err(|_| StorageError::InvalidArgument("topic is longer than 255 bytes".into()))?;
        buf.push(BATCH_VERSION);
        buf.extend_from_slice(&store_ms.to_le_bytes());
        buf.push(topic_len);
        buf.extend_from_slice(topic.as_bytes());
        let count_at = buf.len();
        buf.extend_from_slice(&0u32.to_le_bytes());
        Ok(BatchEncoder {
            buf,
            count_at,
            count: 0,
        })
    }

    /// Appends one message with its properties.
    pub fn push<'p>(
        &mut self,
        m: &MessageIn<'_>,
        properties: impl IntoIterator<Item = (&'p str, &'p str)>,
    ) -> Result<()> {
        let start = self.buf.len();
        let r = self.push_inner(m, properties);
        if r.is_err() {
            self.buf.truncate(start);
        }
        r
    }

    fn push_inner<'p>(
        &mut self,
        m: &MessageIn<'_>,
        properties: impl IntoIterator<Item = (&'p str, &'p str)>,
    ) -> Result<()> {
        let buf = &mut *self.buf;
        let len_at = buf.len();
        buf.extend_from_slice(&[0; 4]);
        let mut flags = 0;
        if m.key.is_some() {
            flags |= FLAG_KEY;
        }
        if m.tag.is_some() {
            flags |= FLAG_TAG;
        }
        if m.binary {
            flags |= FLAG_BINARY;
        }
        if m.deliver_at_ms.is_some() {
            flags |= FLAG_DELIVER_AT;
        }
        if m.idempotency_key.is_some() {
            flags |= FLAG_IDEMPOTENT;
        }
        buf.push(flags);
        buf.extend_from_slice(&m.queue.to_le_bytes());
        buf.extend_from_slice(&m.born_ms.to_le_bytes());
        if let Some(at) = m.deliver_at_ms {
            buf.extend_from_slice(&at.to_le_bytes());
        }
        if let Some(key) = m.key {
            put_str16(buf, "key", key)?;
        }
        if let Some(tag) = m.tag {
            put_str16(buf, "tag", tag)?;
        }
        if let Some(k) = m.idempotency_key {
            put_str16(buf, "idempotency key", k)?;
        }
        let count_at = buf.len();
        buf.extend_from_slice(&[0; 2]);
        let mut count = 0u16;
        for (k, v) in properties {
            count = count.checked_add(1).ok_or_else(|| {
                StorageError::InvalidArgument("more than 65535 properties".into())
            })?;
            put_str16(buf, "property name", k)?;
            let vlen = u32::try_from(v.len())
                .map_err(|_| StorageError::InvalidArgument("property value is too long".into()))?;
            buf.extend_from_slice(&vlen.to_le_bytes());
            buf.extend_from_slice(v.as_bytes());
        }
        buf[count_at..count_at + 2].copy_from_slice(&count.to_le_bytes());
        buf.extend_from_slice(m.body);
        let len = u32::try_from(buf.len() - len_at - 4)
            .map_err(|_| StorageError::InvalidArgument("message is larger than 4 GiB".into()))?;
        buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
        Ok(())
    }

    /// Finishes the batch and returns how many messages it holds.
    pub fn finish(self) -> u32 {
        self.buf[self.count_at..self.count_at + 4].copy_from_slice(&self.count.to_le_bytes());
        self.count
    }
}

/// Joins encoded batches of one topic into one batch: their messages in the order given, as
/// if one encoder had pushed them all, stored at the latest of their `store_ms`. A leader
/// merges concurrent produce requests into one entry with it; message `i` of the `k`-th
/// batch lands at slot `i` plus the counts of the batches before it.
pub fn concat_batches(batches: &[&[u8]]) -> Result<Vec<u8>> {
    let views = batches
        .iter()
        .map(|b| BatchView::parse(b))
        .collect::<Result<Vec<_>>>()?;
    let Some(first) = views.first() else {
        return Err(StorageError::InvalidArgument("no batch to join".into()));
    };
    let mut count = 0u32;
    let mut store_ms = 0;
    for v in &views {
        if v.topic != first.topic {
            return Err(StorageError::InvalidArgument(format!(
                "batches of topics {} and {} cannot be joined",
                first.topic, v.topic
            )));
        }
        count = count
            .checked_add(v.count)
            .ok_or_else(|| StorageError::InvalidArgument("more than 2^32 messages".into()))?;
        store_ms = store_ms.max(v.store_ms);
    }
    let bytes = views.iter().map(|v| v.messages.len()).sum::<usize>();
    let mut buf = Vec::with_capacity(bytes + 14 + first.topic.len());
    let mut enc = BatchEncoder::new(&mut buf, first.topic, store_ms)?;
    enc.count = count;
    enc.finish();
    for v in &views {
        buf.extend_from_slice(v.messages);
    }
    Ok(buf)
}

/// A cursor over borrowed bytes that reports malformed input instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| malformed("message batch", format!("cut short at byte {}", self.pos)))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn str(&mut self, n: usize, what: &'static str) -> Result<&'a str> {
        std::str::from_utf8(self.take(n)?).map_err(|_| malformed(what, "not UTF-8"))
    }
    fn str16(&mut self, what: &'static str) -> Result<&'a str> {
        let n = self.u16()? as usize;
        self.str(n, what)
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
}

/// A decoded batch header; its messages are read lazily.
#[derive(Clone, Copy, Debug)]
pub struct BatchView<'a> {
    /// The topic of every message in the batch.
    pub topic: &'a str,
    /// When the leader stored the batch (ms since the epoch).
    pub store_ms: u64,
    /// Number of messages.
    pub count: u32,
    messages: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Parses the header of an encoded batch.
    pub fn parse(payload: &'a [u8]) -> Result<Self> {
        let mut r = Reader {
            buf: payload,
            pos: 0,
        };
        let version = r.u8()?;
        if version != BATCH_VERSION {
            return Err(malformed(
                "message batch",
                format!("unknown version {version}"),
            ));
        }
        let store_ms = r.u64()?;
        let topic_len = r.u8()? as usize;
        let topic = r.str(topic_len, "topic")?;
        let count = r.u32()?;
        Ok(BatchView {
            topic,
            store_ms,
            count,
            messages: r.rest(),
        })
    }

    /// The messages in order; the last item is an error if the batch is malformed.
    pub fn iter(&self) -> MessageIter<'a> {
        MessageIter {
            r: Reader {
                buf: self.messages,
                pos: 0,
            },
            left: self.count,
            slot: 0,
        }
    }

    /// The message at `slot`, skipping earlier ones by their length prefix (reading many
    /// slots of one batch: [`SlotIndex`]).
    pub fn get(&self, slot: u32) -> Result<MessageRef<'a>> {
        self.check_slot(slot)?;
        let mut r = Reader {
            buf: self.messages,
            pos: 0,
        };
        for _ in 0..slot {
            let len = r.u32()? as usize;
            r.take(len)?;
        }
        decode_message(&mut r, slot)
    }

    fn check_slot(&self, slot: u32) -> Result<()> {
        if slot >= self.count {
            return Err(malformed(
                "message batch",
                format!("slot {slot} is past its {} messages", self.count),
            ));
        }
        Ok(())
    }
}

/// Where each message of a batch starts, found in one pass, so reading many slots of a
/// batch costs one pass instead of one per slot ([`BatchView::get`] skips `slot` messages).
#[derive(Clone, Debug, Default)]
pub struct SlotIndex(Vec<u32>);

impl SlotIndex {
    /// Indexes `view`'s messages (an error if their length prefixes do not add up).
    pub fn new(view: &BatchView<'_>) -> Result<Self> {
        let mut r = Reader {
            buf: view.messages,
            pos: 0,
        };
        let mut starts = Vec::with_capacity(view.count as usize);
        for _ in 0..view.count {
            starts.push(r.pos as u32);
            let len = r.u32()? as usize;
            r.take(len)?;
        }
        Ok(SlotIndex(starts))
    }

    /// The message at `slot` of `view`, the batch this index was built from.
    pub fn get<'a>(&self, view: &BatchView<'a>, slot: u32) -> Result<MessageRef<'a>> {
        view.check_slot(slot)?;
        let start = *self
            .0
            .get(slot as usize)
            .ok_or_else(|| malformed("slot index", "built from another batch"))?;
        let mut r = Reader {
            buf: view.messages,
            pos: start as usize,
        };
        decode_message(&mut r, slot)
    }
}

/// Iterator over a batch's messages.
#[derive(Debug)]
pub struct MessageIter<'a> {
    r: Reader<'a>,
    left: u32,
    slot: u32,
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reader {{ pos: {}, len: {} }}", self.pos, self.buf.len())
    }
}

impl<'a> Iterator for MessageIter<'a> {
    type Item = Result<MessageRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            if self.r.pos != self.r.buf.len() {
                self.r.pos = self.r.buf.len();
                return Some(Err(malformed("message batch", "trailing bytes")));
            }
            return None;
        }
        self.left -= 1;
        let m = decode_message(&mut self.r, self.slot);
        self.slot += 1;
        if m.is_err() {
            self.left = 0;
            self.r.pos = self.r.buf.len();
        }
        Some(m)
    }
}

fn decode_message<'a>(r: &mut Reader<'a>, slot: u32) -> Result<MessageRef<'a>> {
    let len = r.u32()? as usize;
    let mut m = Reader {
        buf: r.take(len)?,
        pos: 0,
    };
    let flags = m.u8()?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(malformed("message", format!("unknown flags {flags:#04x}")));
    }
    let queue = m.u32()?;
    let born_ms = m.u64()?;
    let deliver_at_ms = if flags & FLAG_DELIVER_AT != 0 {
        Some(m.u64()?)
    } else {
        None
    };
    let key = (flags & FLAG_KEY != 0)
        .then(|| m.str16("key"))
        .transpose()?;
    let tag = (flags & FLAG_TAG != 0)
        .then(|| m.str16("tag"))
        .transpose()?;
    let idempotency_key = (flags & FLAG_IDEMPOTENT != 0)
        .then(|| m.str16("idempotency key"))
        .transpose()?;
    let prop_count = m.u16()?;
    let props_start = m.pos;
    for _ in 0..prop_count {
        m.str16("property name")?;
        let vlen = m.u32()? as usize;
        m.str(vlen, "property value")?;
    }
    let props = &m.buf[props_start..m.pos];
    let body = m.rest();
    Ok(MessageRef {
        slot,
        queue,
        born_ms,
        deliver_at_ms,
        key,
        tag,
        idempotency_key,
        binary: flags & FLAG_BINARY != 0,
        properties: Properties {
            raw: props,
            count: prop_count,
        },
        body,
        encoded_len: len as u32 + 4,
    })
}

/// A message borrowed from a batch payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageRef<'a> {
    /// Its position in the batch.
    pub slot: u32,
    /// The queue it was written to.
    pub queue: u32,
    /// Producer's timestamp.
    pub born_ms: u64,
    /// Delayed delivery time, if any.
    pub deliver_at_ms: Option<u64>,
    /// Business key.
    pub key: Option<&'a str>,
    /// Filter tag.
    pub tag: Option<&'a str>,
    /// The producer's idempotency key, if it gave one.
    pub idempotency_key: Option<&'a str>,
    /// Whether the body was produced as base64.
    pub binary: bool,
    /// Properties, validated, iterated lazily.
    pub properties: Properties<'a>,
    /// The body bytes.
    pub body: &'a [u8],
    /// Bytes this message occupies in the batch (the ConsumeQueue's `size`).
    pub encoded_len: u32,
}

/// A message's properties, in the order they were given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Properties<'a> {
    raw: &'a [u8],
    count: u16,
}

impl<'a> Properties<'a> {
    /// Number of properties.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `(name, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let mut r = Reader {
            buf: self.raw,
            pos: 0,
        };
        (0..self.count).map_while(move |_| {
            // Validated when the message was decoded, so these cannot fail.
            let k = r.str16("property name").ok()?;
            let vlen = r.u32().ok()? as usize;
            let v = r.str(vlen, "property value").ok()?;
            Some((k, v))
        })
    }
}

/// The hash stored in the ConsumeQueue for tag filtering (0 when there is no tag).
pub fn tag_hash(tag: Option<&str>) -> u32 {
    tag.map_or(0, |t| crc32c::crc32c(t.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut buf = Vec::new();
        let mut enc = BatchEncoder::new(&mut buf, "orders", 1_700_000_000_000).unwrap();
        enc.push(
            &MessageIn {
                queue: 3,
                born_ms: 5,
                key: Some("order-42"),
                tag: Some("paid"),
                body: b"hello",
                ..Default::default()
            },
            [("region", "eu"), ("k", "")],
        )
        .unwrap();
        enc.push(
            &MessageIn {
                queue: 0,
                born_ms: 6,
                deliver_at_ms: Some(99),
                binary: true,
                body: &[0, 1, 2],
                ..Default::default()
            },
            [],
        )
        .unwrap();
        assert_eq!(enc.finish(), 2);
        buf
    }

    #[test]
    fn round_trip() {
        let buf = sample();
        let batch = BatchView::parse(&buf).unwrap();
        assert_eq!(
            (batch.topic, batch.store_ms, batch.count),
            ("orders", 1_700_000_000_000, 2)
        );
        let msgs: Vec<_> = batch.iter().collect::<Result<_>>().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].key, Some("order-42"));
        assert_eq!(msgs[0].tag, Some("paid"));
        assert_eq!(msgs[0].body, b"hello");
        assert_eq!(
            msgs[0].properties.iter().collect::<Vec<_>>(),
            [("region", "eu"), ("k", "")]
        );
        assert_eq!((msgs[1].queue, msgs[1].deliver_at_ms), (0, Some(99)));
        assert!(msgs[1].binary && msgs[1].key.is_none() && msgs[1].properties.is_empty());
        assert_eq!(batch.get(1).unwrap(), msgs[1]);
        assert!(batch.get(2).is_err());
        let index = SlotIndex::new(&batch).unwrap();
        for (slot, m) in msgs.iter().enumerate() {
            assert_eq!(&index.get(&batch, slot as u32).unwrap(), m);
        }
        assert!(index.get(&batch, 2).is_err());
        let other = BatchView::parse(&buf[..buf.len() - 1]);
        assert!(
            other.and_then(|b| SlotIndex::new(&b)).is_err(),
            "a cut batch"
        );
        let total: u32 = msgs.iter().map(|m| m.encoded_len).sum();
        assert_eq!(total as usize, buf.len() - (1 + 8 + 1 + 6 + 4));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let buf = sample();
        for cut in 0..buf.len() {
            let r =
                BatchView::parse(&buf[..cut]).and_then(|b| b.iter().collect::<Result<Vec<_>>>());
            assert!(r.is_err(), "cut at {cut} was accepted");
        }
        let mut extra = buf.clone();
        extra.push(0);
        let b = BatchView::parse(&extra).unwrap();
        assert!(b.iter().collect::<Result<Vec<_>>>().is_err());
    }

    #[test]
    fn joined_batches_read_as_one() {
        let a = sample();
        let mut b = Vec::new();
        let mut enc = BatchEncoder::new(&mut b, "orders", 1_700_000_000_007).unwrap();
        let m = MessageIn {
            queue: 1,
            body: b"third",
            ..Default::default()
        };
        enc.push(&m, []).unwrap();
        enc.finish();
        let joined = concat_batches(&[&a, &b, &a]).unwrap();
        let v = BatchView::parse(&joined).unwrap();
        assert_eq!(
            (v.topic, v.store_ms, v.count),
            ("orders", 1_700_000_000_007, 5)
        );
        let msgs: Vec<_> = v.iter().collect::<Result<_>>().unwrap();
        let bodies: Vec<&[u8]> = msgs.iter().map(|m| m.body).collect();
        assert_eq!(
            bodies,
            [&b"hello"[..], &[0, 1, 2], b"third", b"hello", &[0, 1, 2]]
        );
        assert_eq!(v.get(2).unwrap().queue, 1);
        let mut other = Vec::new();
        BatchEncoder::new(&mut other, "payments", 0)
            .unwrap()
            .finish();
        assert!(concat_batches(&[&a, &other]).is_err(), "topics differ");
        assert!(concat_batches(&[]).is_err());
        assert!(concat_batches(&[&a[..5]]).is_err(), "a truncated batch");
    }

    #[test]
    fn the_colliding_tags_of_the_api_tests_collide() {
        assert_eq!(tag_hash(Some("mtwjgxhjk")), tag_hash(Some("cyvilpkff")));
    }

    #[test]
    fn unknown_flags_and_versions_are_refused() {
        let mut buf = sample();
        buf[0] = 9;
        assert!(BatchView::parse(&buf).is_err());
        let mut buf = sample();
        let first_flags = 1 + 8 + 1 + 6 + 4 + 4;
        buf[first_flags] |= 0x80;
        let b = BatchView::parse(&buf).unwrap();
        assert!(b.iter().next().unwrap().is_err());
    }

    #[test]
    fn a_failed_push_leaves_the_batch_intact() {
        let mut buf = Vec::new();
        let mut enc = BatchEncoder::new(&mut buf, "t", 0).unwrap();
        let long = "k".repeat(70_000);
        assert!(
            enc.push(
                &MessageIn {
                    key: Some(&long),
                    ..Default::default()
                },
                []
            )
            .is_err()
        );
        enc.push(
            &MessageIn {
                body: b"ok",
                ..Default::default()
            },
            [],
        )
        .unwrap();
        assert_eq!(enc.finish(), 1);
        let b = BatchView::parse(&buf).unwrap();
        assert_eq!(b.iter().next().unwrap().unwrap().body, b"ok");
    }
}
