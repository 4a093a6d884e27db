//! Reads the input file line by line, with bounded memory whatever the lines hold: a line longer
//! than [`MAX_LINE`] is not kept whole, only its first [`RAW_KEPT`] bytes and its length.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::row::{Line, MAX_LINE, RAW_KEPT};

/// How far the reader got, shared with whoever shows progress.
#[derive(Debug, Default)]
pub(crate) struct ReadProgress {
    /// Lines read.
    pub(crate) lines: AtomicU64,
    /// Bytes read.
    pub(crate) bytes: AtomicU64,
}

/// Why the input cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {path} after line {line}: {source}")]
pub(crate) struct ReadError {
    /// The input file.
    pub(crate) path: PathBuf,
    /// The last line read whole.
    pub(crate) line: u64,
    /// What failed.
    pub(crate) source: io::Error,
}

/// The lines of a file, numbered from 1. An I/O error is yielded once, then the iterator ends.
#[derive(Debug)]
pub(crate) struct Lines {
    path: PathBuf,
    input: BufReader<File>,
    number: u64,
    done: bool,
    progress: Arc<ReadProgress>,
}

impl Lines {
    /// Opens `path`; its size in bytes comes with it (for a progress bar).
    pub(crate) fn open(path: &Path, progress: Arc<ReadProgress>) -> io::Result<(Self, u64)> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        let lines = Self {
            path: path.to_owned(),
            input: BufReader::with_capacity(256 * 1024, file),
            number: 0,
            done: false,
            progress,
        };
        Ok((lines, size))
    }

    /// Reads the next line into a `Line`, or `None` at the end of the file.
    fn read_line(&mut self) -> io::Result<Option<Line>> {
        let mut bytes = Vec::new();
        let mut length = 0u64;
        let mut ended = false;
        while !ended {
            let buffer = match self.input.fill_buf() {
                Ok(buffer) => buffer,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            if buffer.is_empty() {
                if length == 0 {
                    return Ok(None);
                }
                break;
            }
            let (taken, used) = match buffer.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    ended = true;
                    (&buffer[..end], end + 1)
                }
                None => (buffer, buffer.len()),
            };
            // Keep at most MAX_LINE bytes; past that only the length counts.
            let room = (MAX_LINE + 1).saturating_sub(bytes.len());
            bytes.extend_from_slice(&taken[..taken.len().min(room)]);
            length += taken.len() as u64;
            self.input.consume(used);
            self.progress
                .bytes
                .fetch_add(used as u64, Ordering::Relaxed);
        }
        if bytes.last() == Some(&b'\r') && length as usize == bytes.len() {
            bytes.pop();
            length -= 1;
        }
        self.number += 1;
        self.progress.lines.store(self.number, Ordering::Relaxed);
        let too_long = (length > MAX_LINE as u64).then(|| {
            bytes.truncate(RAW_KEPT);
            length
        });
        Ok(Some(Line {
            number: self.number,
            bytes,
            too_long,
        }))
    }
}

impl Iterator for Lines {
    type Item = Result<Line, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.read_line() {
            Ok(Some(line)) => Some(Ok(line)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(source) => {
                self.done = true;
                Some(Err(ReadError {
                    path: self.path.clone(),
                    line: self.number,
                    source,
                }))
            }
        }
    }
}
