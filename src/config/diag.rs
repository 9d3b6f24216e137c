//! A problem in a config or policy file, located as `FILE:LINE:COL`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl Diagnostic {
    /// Locate a byte span of `src`; columns count characters, as editors do.
    pub fn at(file: &Path, src: &str, span: Range<usize>, msg: impl Into<String>) -> Self {
        let start = span.start.min(src.len());
        let before = &src[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        Diagnostic {
            file: file.to_owned(),
            line,
            col,
            msg: msg.into(),
        }
    }

    /// A problem with the file as a whole (unreadable, missing): no line, and none is printed.
    pub fn file(file: &Path, msg: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_owned(),
            line: 0,
            col: 0,
            msg: msg.into(),
        }
    }

    pub fn from_toml(file: &Path, src: &str, err: &toml::de::Error) -> Self {
        let span = err.span().unwrap_or(0..0);
        let msg = super::hint::explain(err.message().trim(), src, span.clone());
        Self::at(file, src, span, msg)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.file.display(), self.msg);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.msg
        )
    }
}

/// Collects problems for one source file so validation can report all of them at once.
pub(super) struct Sink<'a> {
    pub file: &'a Path,
    pub src: &'a str,
    pub out: &'a mut Vec<Diagnostic>,
    /// What works but is probably not what was meant.
    pub warned: &'a mut Vec<Diagnostic>,
}

impl Sink<'_> {
    pub fn err(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.out
            .push(Diagnostic::at(self.file, self.src, span, msg));
    }

    pub fn warn(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.warned
            .push(Diagnostic::at(self.file, self.src, span, msg));
    }
}
