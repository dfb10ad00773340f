//! MJPEG: one decoder and JPEG encoder per camera, shared by all its MJPEG viewers and running
//! only while one watches, at `[mjpeg] fps` and `width`.
//!
//! Ownership: the camera owns its [`Mjpeg`] slot. The first viewer starts an [`Encoder`] (a
//! task with a decoder thread, fed by a hub subscription); viewers share it through an `Arc`,
//! and the last one to leave cancels it. The slot keeps every encoder task's handle, so the
//! camera's removal awaits them. Each viewer gets the newest picture from a `watch` channel: a
//! slow viewer skips pictures and never queues them, so its memory is one JPEG.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, Weak};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::hub::Stream;
use crate::output::frames::Grabber;
use crate::output::snapshot::encode_jpeg;
use crate::resources::{spawn_task, Counted, Resource, ViewerKind};

/// The multipart boundary between pictures.
pub const BOUNDARY: &str = "frame";
pub const CONTENT_TYPE: &str = "multipart/x-mixed-replace; boundary=frame";
const JPEG_QUALITY: u8 = 75;

/// `[mjpeg]`: the rate and width of the pictures.
pub use crate::config::MjpegSettings as Settings;

/// A camera's MJPEG encoder slot.
#[derive(Default)]
pub struct Mjpeg {
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    current: Weak<Encoder>,
    /// Every encoder task started and not yet known to be finished.
    tasks: Vec<JoinHandle<()>>,
}

/// A running encoder; it stops when the last viewer drops its `Arc`.
pub struct Encoder {
    pictures: watch::Receiver<Option<Bytes>>,
    cancel: CancellationToken,
}

impl Drop for Encoder {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Mjpeg {
    /// The camera's running encoder, started for this viewer if none runs.
    pub fn encoder(&self, stream: &Arc<Stream>, settings: Settings) -> Arc<Encoder> {
        let mut slot = self.slot.lock().unwrap();
        if let Some(e) = slot.current.upgrade() {
            return e;
        }
        slot.tasks.retain(|t| !t.is_finished());
        let (tx, pictures) = watch::channel(None);
        let cancel = CancellationToken::new();
        let encoder = Arc::new(Encoder {
            pictures,
            cancel: cancel.clone(),
        });
        slot.tasks
            .push(spawn_task(run(stream.clone(), settings, tx, cancel)));
        slot.current = Arc::downgrade(&encoder);
        encoder
    }

    /// Stops the encoder, if one runs, and waits for every encoder task (the camera is going).
    pub async fn stop(&self) {
        let tasks = {
            let mut slot = self.slot.lock().unwrap();
            if let Some(e) = slot.current.upgrade() {
                e.cancel.cancel();
            }
            std::mem::take(&mut slot.tasks)
        };
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Decodes the camera's video at `settings.fps` and publishes each picture as JPEG, until
/// cancelled or the camera stops.
async fn run(
    stream: Arc<Stream>,
    settings: Settings,
    tx: watch::Sender<Option<Bytes>>,
    cancel: CancellationToken,
) {
    let _counted = Counted::new(Resource::Transcoder);
    let Some(mut frames) = stream.subscribe(ViewerKind::Transcoder) else {
        return;
    };
    let mut grabber = match Grabber::start(stream.id(), settings.width, settings.fps) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(camera = %stream.id(), "cannot start the MJPEG decoder: {e}");
            return;
        }
    };
    let mut pictures = grabber.pictures.clone();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            frame = frames.next() => match frame {
                Ok(f) => grabber.push(&f),
                Err(_) => break,
            },
            changed = pictures.changed() => {
                if changed.is_err() {
                    break;
                }
                let Some(picture) = pictures.borrow_and_update().clone() else {
                    continue;
                };
                let encoded = tokio::task::spawn_blocking(move || {
                    encode_jpeg(&picture.rgb, picture.width, picture.height, JPEG_QUALITY)
                })
                .await;
                match encoded {
                    Ok(Ok(jpeg)) => {
                        tx.send_replace(Some(jpeg));
                    }
                    Ok(Err(e)) => tracing::warn!(camera = %stream.id(), "MJPEG encode failed: {e}"),
                    Err(_) => break,
                }
            }
        }
    }
    grabber.stop().await;
}

/// One part of the multipart body: boundary, headers and the picture.
pub fn part(jpeg: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(jpeg.len() + 96);
    out.put_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        )
        .as_bytes(),
    );
    out.put_slice(jpeg);
    out.put_slice(b"\r\n");
    out.freeze()
}

/// A viewer's body: the newest picture at once (when there is one), then each new picture,
/// until the encoder stops (camera stopped or removed) or `shutdown`. Counted as an MJPEG
/// viewer while it exists.
pub fn parts(
    encoder: Arc<Encoder>,
    shutdown: CancellationToken,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    let mut pictures = encoder.pictures.clone();
    pictures.mark_changed();
    let viewer = Counted::new(Resource::Viewer(ViewerKind::Mjpeg));
    futures_util::stream::unfold(
        (pictures, encoder, viewer, shutdown),
        |(mut pictures, encoder, viewer, shutdown)| async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    changed = pictures.changed() => changed.ok()?,
                }
                let jpeg = pictures.borrow_and_update().clone();
                if let Some(jpeg) = jpeg {
                    return Some((Ok(part(&jpeg)), (pictures, encoder, viewer, shutdown)));
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_is_boundary_headers_picture_and_a_line_end() {
        let p = part(b"\xff\xd8JPEG\xff\xd9");
        assert_eq!(
            &p[..],
            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 8\r\n\r\n\xff\xd8JPEG\xff\xd9\r\n"
        );
        assert!(CONTENT_TYPE.ends_with(&format!("boundary={BOUNDARY}")));
    }
}
