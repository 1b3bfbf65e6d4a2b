//! Turns Docker's log frames into lines. Frames follow the container's
//! writes, not its lines: one frame may hold several lines or half of one,
//! so each stream keeps its own buffer until a newline arrives.

use std::collections::VecDeque;

use bollard::container::LogOutput;
use futures::stream::{BoxStream, StreamExt};
use shoal_proto::LogLine;

use crate::exec::{ExecError, PodRef};

/// Splits the bytes of one stream ("stdout" or "stderr") into lines.
#[derive(Default)]
struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    /// Appends a frame; returns every line it completed, without the newline
    /// (and without a carriage return before it).
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.partial);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                lines.push(String::from_utf8_lossy(&line).into_owned());
            } else {
                self.partial.push(b);
            }
        }
        lines
    }

    /// The last line when the output ended without a newline.
    fn flush(&mut self) -> Option<String> {
        (!self.partial.is_empty())
            .then(|| String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned())
    }
}

struct Splitter {
    frames: BoxStream<'static, Result<LogOutput, bollard::errors::Error>>,
    pod: PodRef,
    stdout: LineBuffer,
    stderr: LineBuffer,
    ready: VecDeque<Result<LogLine, ExecError>>,
    done: bool,
}

impl Splitter {
    fn line(&self, stream: &str, line: String) -> LogLine {
        LogLine {
            pod_name: self.pod.pod_name.clone(),
            pod_id: self.pod.pod_id.clone(),
            stream: stream.to_string(),
            line,
        }
    }

    fn accept(&mut self, frame: LogOutput) {
        let (stream, lines) = match frame {
            LogOutput::StdErr { message } => ("stderr", self.stderr.push(&message)),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                ("stdout", self.stdout.push(&message))
            }
            LogOutput::StdIn { .. } => return,
        };
        for l in lines {
            let line = self.line(stream, l);
            self.ready.push_back(Ok(line));
        }
    }

    fn finish(&mut self) {
        self.done = true;
        if let Some(l) = self.stdout.flush() {
            let line = self.line("stdout", l);
            self.ready.push_back(Ok(line));
        }
        if let Some(l) = self.stderr.flush() {
            let line = self.line("stderr", l);
            self.ready.push_back(Ok(line));
        }
    }
}

/// Lines of `frames`, labelled with the pod. A Docker error ends the stream
/// after being yielded once.
pub fn into_lines(
    frames: BoxStream<'static, Result<LogOutput, bollard::errors::Error>>,
    pod: PodRef,
) -> BoxStream<'static, Result<LogLine, ExecError>> {
    let splitter = Splitter {
        frames,
        pod,
        stdout: LineBuffer::default(),
        stderr: LineBuffer::default(),
        ready: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(splitter, |mut s| async move {
        loop {
            if let Some(item) = s.ready.pop_front() {
                return Some((item, s));
            }
            if s.done {
                return None;
            }
            match s.frames.next().await {
                Some(Ok(frame)) => s.accept(frame),
                Some(Err(e)) => {
                    s.finish();
                    let err = ExecError::Runtime {
                        op: "logs",
                        target: s.pod.container_name(),
                        reason: e.to_string(),
                    };
                    s.ready.push_back(Err(err));
                }
                None => s.finish(),
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn frames_are_split_into_lines_per_stream() {
        let frames = vec![
            Ok(LogOutput::StdOut {
                message: Bytes::from_static(b"one\ntw"),
            }),
            Ok(LogOutput::StdErr {
                message: Bytes::from_static(b"err\r\n"),
            }),
            Ok(LogOutput::StdOut {
                message: Bytes::from_static(b"o\nlast"),
            }),
        ];
        let lines: Vec<LogLine> = into_lines(
            futures::stream::iter(frames).boxed(),
            PodRef::new("p", "web.1"),
        )
        .map(|l| l.unwrap())
        .collect()
        .await;
        let got: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l.stream.as_str(), l.line.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("stdout", "one"),
                ("stderr", "err"),
                ("stdout", "two"),
                ("stdout", "last")
            ]
        );
        assert!(lines
            .iter()
            .all(|l| l.pod_id == "p" && l.pod_name == "web.1"));
    }
}
