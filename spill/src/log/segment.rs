//! Walking the frames of one segment, for the reader and for recovery alike. [`Cursor`] checks a
//! segment's header and steps through its frames with [`parse_frame`], the log's one frame parser,
//! refilling its [`ReadBuf`] with `read(2)` or reading a mapped sealed segment in place. What a bad
//! frame means is the caller's business: the reader applies [`OnCorruption`](crate::OnCorruption),
//! recovery tells a torn tail from corruption in the middle. The reader's hot loop calls
//! [`parse_frame`] itself on the same window ([`window`]), and leaves everything else to the cursor.

use std::io;
use std::ops::Range;
use std::path::PathBuf;

use crate::error::SpillError;
use crate::format::{
    FRAME_HEADER_LEN, Frame, Parsed, SEGMENT_HEADER_LEN, SegmentHeader, parse_frame,
};
use crate::fs::{Filesystem, ReadFile, SegmentBytes};
use crate::reasons;

/// A read-ahead: `bytes[start..end]` are segment bytes not yet consumed.
pub(super) struct ReadBuf {
    pub(super) bytes: Vec<u8>,
    pub(super) start: usize,
    end: usize,
    /// How much one refill reads (the buffer's size, unless a frame needs more).
    chunk: usize,
}

impl ReadBuf {
    /// An empty read-ahead that reads `chunk` bytes at a time; allocated at the first read.
    pub(super) fn new(chunk: usize) -> Self {
        Self {
            bytes: Vec::new(),
            start: 0,
            end: 0,
            chunk,
        }
    }

    pub(super) fn available(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    pub(super) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Makes at least `need` bytes available from `file`, whose next byte is at segment offset
    /// `offset + available`, reading as many as fit in one large sequential read but never past
    /// `limit` (bytes past it may be a batch still being written). `need` must not reach past the
    /// limit; a file shorter than its published length is an I/O error.
    pub(super) fn fill(
        &mut self,
        file: &mut dyn ReadFile,
        offset: u64,
        limit: u64,
        need: usize,
    ) -> io::Result<()> {
        if self.end - self.start >= need {
            return Ok(());
        }
        if self.bytes.len() - self.start < need {
            // Carry the partial frame over to the front (and grow for an outsized frame).
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.bytes.len() < need {
                // Exactly: `SpillLog::max_buffer_bytes` counts this buffer at its size. A new
                // buffer comes zeroed from the allocator (fresh pages: no memset).
                let size = need.max(self.chunk);
                if self.bytes.is_empty() {
                    self.bytes = vec![0; size];
                } else {
                    self.bytes.reserve_exact(size - self.bytes.len());
                    self.bytes.resize(size, 0);
                }
            }
        }
        let file_pos = offset + (self.end - self.start) as u64;
        let mut readable = limit.saturating_sub(file_pos);
        while self.end - self.start < need {
            let room =
                (self.bytes.len() - self.end).min(usize::try_from(readable).unwrap_or(usize::MAX));
            if room == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    reasons::FRAME_PAST_WRITTEN,
                ));
            }
            let n = match file.read(&mut self.bytes[self.end..self.end + room]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        reasons::FILE_SHORTER_THAN_WRITTEN,
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.end += n;
            readable -= n as u64;
        }
        Ok(())
    }
}

/// Where a cursor's bytes come from.
pub(super) enum Source {
    /// `read(2)` into a [`ReadBuf`]: the active segment, which is still being written, and every
    /// segment when mapped reads are off or the filesystem does not map.
    Read(Box<dyn ReadFile>),
    /// The whole sealed segment (`[0, limit)`) in memory, mapped by
    /// [`Filesystem::map_sealed`]: records are checked and decoded in place, without the kernel's
    /// copy into the read-ahead buffer.
    Mapped(SegmentBytes),
}

/// The unconsumed bytes of a cursor at segment offset `offset` (for [`Source::Read`], possibly
/// some past its limit: [`parse_frame`] is given the limit) and the index of the first one in
/// [`bytes`].
#[inline]
pub(super) fn window<'a>(buf: &'a ReadBuf, source: &'a Source, offset: u64) -> (&'a [u8], usize) {
    match source {
        Source::Read(_) => (buf.available(), buf.start),
        Source::Mapped(bytes) => {
            let at = usize::try_from(offset).unwrap_or(usize::MAX);
            ((**bytes).as_ref().get(at..).unwrap_or_default(), at)
        }
    }
}

/// The bytes that a [`Step`]'s payload range indexes.
#[inline]
pub(super) fn bytes<'a>(buf: &'a ReadBuf, source: Option<&'a Source>) -> &'a [u8] {
    match source {
        Some(Source::Mapped(bytes)) => (**bytes).as_ref(),
        _ => &buf.bytes,
    }
}

/// A position in one segment.
pub(super) struct Cursor {
    pub(super) first_seq: u64,
    pub(super) path: PathBuf,
    pub(super) source: Source,
    /// The segment offset of the first unconsumed byte (for [`Source::Read`], the start of the
    /// [`ReadBuf`]).
    pub(super) offset: u64,
    /// Visible bytes of the segment when last looked at.
    pub(super) limit: u64,
    /// The sequence number of the frame at `offset`.
    pub(super) seq: u64,
    /// The framing was lost (skip mode): read nothing more from this segment.
    pub(super) dead: bool,
    /// The reader's hot loop asked the CPU for the segment's bytes up to this offset (mapped
    /// segments only: a read-ahead was just written by the kernel, it starts at `u64::MAX`).
    pub(super) prefetched: u64,
}

/// Why a segment could not be opened for reading.
pub(super) enum OpenCursor {
    /// The file is not there (deleted once acknowledged, or by someone else).
    Gone(PathBuf, io::Error),
    Failed(SpillError),
    BadHeader(PathBuf, BadHeader),
}

/// What is wrong with a segment's header.
pub(super) enum BadHeader {
    /// The segment is shorter than a header.
    Short(u64),
    /// The header does not decode (the reason says why).
    Garbled(String),
    /// The header names another first record than the file name.
    Mismatch { found: u64, named: u64 },
}

impl BadHeader {
    pub(super) fn reason(self) -> String {
        match self {
            BadHeader::Short(len) => reasons::shorter_than_header(len),
            BadHeader::Garbled(reason) => reason,
            BadHeader::Mismatch { found, named } => reasons::first_seq_mismatch(found, named),
        }
    }
}

/// One frame found by [`Cursor::next_frame`].
pub(super) struct Step {
    /// Where the frame starts in the segment.
    pub(super) offset: u64,
    pub(super) frame: Frame,
    /// For a [`Frame::Record`], where its payload is in [`bytes`] (valid until the next step).
    pub(super) payload: Range<usize>,
}

impl Cursor {
    /// Opens the segment starting at `first` (with `limit` bytes visible) and checks its header.
    /// With `map`, a sealed segment is mapped when the filesystem can; otherwise `buf` becomes its
    /// read-ahead. `stage` names the opening in an error.
    pub(super) fn open(
        fs: &dyn Filesystem,
        first: u64,
        path: PathBuf,
        limit: u64,
        map: bool,
        buf: &mut ReadBuf,
        stage: &'static str,
    ) -> Result<Cursor, OpenCursor> {
        let mapped = if map && limit >= SEGMENT_HEADER_LEN {
            match fs.map_sealed(&path, limit) {
                Ok(mapped) => mapped,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(OpenCursor::Gone(path, e));
                }
                Err(error) => {
                    // Reading it is still possible (and reports the real trouble, if any).
                    tracing::debug!(file = %path.display(), %error, "mapping a sealed spill segment failed: reading it instead");
                    None
                }
            }
        } else {
            None
        };
        let source = match mapped {
            Some(bytes) => Source::Mapped(bytes),
            None => match fs.open_read(&path) {
                Ok(file) => Source::Read(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(OpenCursor::Gone(path, e));
                }
                Err(e) => return Err(OpenCursor::Failed(SpillError::io(path, stage, e))),
            },
        };
        if limit < SEGMENT_HEADER_LEN {
            return Err(OpenCursor::BadHeader(path, BadHeader::Short(limit)));
        }
        buf.clear();
        let mut cursor = Cursor {
            first_seq: first,
            path,
            source,
            offset: 0,
            limit,
            seq: first,
            dead: false,
            prefetched: 0,
        };
        let header = match &mut cursor.source {
            Source::Read(file) => {
                if let Err(e) = buf.fill(&mut **file, 0, limit, SEGMENT_HEADER_LEN as usize) {
                    return Err(OpenCursor::Failed(SpillError::io(
                        cursor.path,
                        reasons::READ_SEGMENT_HEADER,
                        e,
                    )));
                }
                let header = SegmentHeader::decode(buf.available());
                buf.consume(SEGMENT_HEADER_LEN as usize);
                header
            }
            Source::Mapped(bytes) => SegmentHeader::decode((**bytes).as_ref()),
        };
        cursor.offset = SEGMENT_HEADER_LEN;
        if let Source::Read(_) = cursor.source {
            cursor.prefetched = u64::MAX;
        }
        match header {
            Ok(header) if header.first_seq == first => Ok(cursor),
            Ok(header) => Err(OpenCursor::BadHeader(
                cursor.path,
                BadHeader::Mismatch {
                    found: header.first_seq,
                    named: first,
                },
            )),
            Err(reason) => Err(OpenCursor::BadHeader(
                cursor.path,
                BadHeader::Garbled(reason),
            )),
        }
    }

    /// The next frame, refilling `buf` as needed. The cursor moves past a [`Frame::Record`] and a
    /// [`Frame::BadCrc`] (whose length is intact), and stays at anything else. Called at the end
    /// of the visible bytes it gives [`Frame::End`].
    pub(super) fn next_frame(&mut self, buf: &mut ReadBuf, max_record: u32) -> io::Result<Step> {
        loop {
            let offset = self.offset;
            let remaining = self.limit.saturating_sub(offset);
            let (bytes, at) = window(buf, &self.source, offset);
            let frame = match parse_frame(bytes, remaining, max_record) {
                Parsed::Frame(frame, _) => frame,
                Parsed::Incomplete { needed } => {
                    let needed = usize::try_from(needed).unwrap_or(usize::MAX);
                    match &mut self.source {
                        Source::Read(file) => buf.fill(&mut **file, offset, self.limit, needed)?,
                        // A mapped window holds every byte up to the limit: never incomplete.
                        Source::Mapped(_) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                reasons::FRAME_PAST_MAP,
                            ));
                        }
                    }
                    continue;
                }
            };
            let payload = match frame {
                Frame::Record { frame_len, .. } => {
                    at + FRAME_HEADER_LEN as usize..at + frame_len as usize
                }
                _ => 0..0,
            };
            if let Frame::Record { frame_len, .. } | Frame::BadCrc { frame_len, .. } = frame {
                if let Source::Read(_) = self.source {
                    buf.consume(frame_len as usize);
                }
                self.offset += frame_len;
                self.seq += 1;
            }
            return Ok(Step {
                offset,
                frame,
                payload,
            });
        }
    }
}
