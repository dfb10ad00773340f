//! Decoded pictures, on demand (principle 2), for what re-encodes or looks at the picture: the
//! analysers and MJPEG.
//!
//! One dedicated thread per user (a camera's analysers, a camera's MJPEG encoder) decodes H.264
//! with openh264 and, at the rate asked for, turns the newest picture into an RGB image of the
//! width asked for (VLM, thumbnails, MJPEG) and a small grayscale one (for motion). Only what is needed is decoded: when
//! pictures are wanted less often than keyframes come, only keyframes are decoded.
//!
//! The thread is fed through a bounded channel; when it falls behind, frames are dropped up to
//! the next keyframe (so the decoder never sees a broken reference chain). It ends when its
//! input is dropped and is joined by its owner ([`Grabber::stop`]).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::formats::YUVSource;
use openh264::OpenH264API;
use tokio::sync::watch;

use crate::media::{h264, Frame};
use crate::resources::spawn_thread;

/// Width of the grayscale picture motion works on.
pub const GRAY_WIDTH: usize = 160;
const QUEUE: usize = 64;

/// One analysed picture.
#[derive(Debug)]
pub struct Picture {
    pub rgb: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub gray: Vec<u8>,
    pub gray_width: usize,
    pub gray_height: usize,
    /// When it was decoded (for rates and latency).
    pub at: Instant,
    /// How long decoding and scaling the picture took (the "grab" part of a VLM latency).
    pub grab: Duration,
}

pub struct Grabber {
    input: Option<SyncSender<Frame>>,
    thread: Option<std::thread::JoinHandle<()>>,
    awaiting_keyframe: bool,
    pub pictures: watch::Receiver<Option<Arc<Picture>>>,
}

impl Grabber {
    /// Starts the decoder thread: pictures of `rgb_width` (and [`GRAY_WIDTH`] gray) at most
    /// `fps` per second.
    pub fn start(camera: &str, rgb_width: u32, fps: f64) -> std::io::Result<Grabber> {
        let (input, frames) = sync_channel(QUEUE);
        let (tx, pictures) = watch::channel(None);
        let interval = Duration::from_secs_f64(1.0 / fps.max(0.01));
        let thread = spawn_thread(format!("grab-{camera}"), move || {
            decode_loop(frames, tx, rgb_width, interval)
        })?;
        Ok(Grabber {
            input: Some(input),
            thread: Some(thread),
            awaiting_keyframe: true,
            pictures,
        })
    }

    /// Hands a frame to the decoder; never blocks.
    pub fn push(&mut self, frame: &Frame) {
        if !frame.is_video() {
            return;
        }
        if self.awaiting_keyframe && !frame.keyframe {
            return;
        }
        let Some(input) = &self.input else { return };
        match input.try_send(frame.clone()) {
            Ok(()) => self.awaiting_keyframe = false,
            Err(TrySendError::Full(_)) => self.awaiting_keyframe = true,
            Err(TrySendError::Disconnected(_)) => self.input = None,
        }
    }

    /// Ends the thread and waits for it.
    pub async fn stop(mut self) {
        self.input = None;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Grabber {
    fn drop(&mut self) {
        // Dropping the input ends the thread; it is detached only if `stop` was not awaited
        // (the owner panicked), and still ends on its own.
        self.input = None;
    }
}

fn decode_loop(
    frames: Receiver<Frame>,
    out: watch::Sender<Option<Arc<Picture>>>,
    rgb_width: u32,
    interval: Duration,
) {
    let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
    let Ok(mut decoder) = Decoder::with_api_config(OpenH264API::from_source(), config) else {
        tracing::error!("openh264 decoder could not be created");
        return;
    };
    let mut annex_b = Vec::new();
    let mut sent_codec = None;
    let mut last_picture: Option<Instant> = None;
    let mut last_keyframe: Option<Instant> = None;
    let mut gop = Duration::from_secs(2);
    let mut skipping = false;
    while let Ok(frame) = frames.recv() {
        let Some(codec) = &frame.video_codec else {
            continue;
        };
        if codec.codec != "h264" {
            continue; // only H.264 is decoded here
        }
        let now = Instant::now();
        if frame.keyframe {
            if let Some(k) = last_keyframe {
                gop = now.duration_since(k);
            }
            last_keyframe = Some(now);
            skipping = false;
        } else if skipping {
            continue;
        }
        let due = last_picture.is_none_or(|t| now.duration_since(t) >= interval);
        // When pictures are wanted less often than keyframes come, decode keyframes only.
        if !frame.keyframe && interval >= gop {
            skipping = true;
            continue;
        }
        annex_b.clear();
        let new_codec = sent_codec.as_ref().is_none_or(|c| !Arc::ptr_eq(c, codec));
        if frame.keyframe || new_codec {
            h264::append_annex_b(&mut annex_b, codec.parameter_sets.iter().map(|p| &p[..]));
            sent_codec = Some(codec.clone());
        }
        h264::append_annex_b(&mut annex_b, h264::length_prefixed_nals(&frame.data));
        let started = Instant::now();
        match decoder.decode(&annex_b) {
            Ok(Some(yuv)) if due => {
                let picture = convert(&yuv, rgb_width, started);
                last_picture = Some(now);
                out.send_replace(Some(Arc::new(picture)));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("analysis decode failed: {e}; waiting for a keyframe");
                skipping = true;
            }
        }
    }
}

/// Scales the decoded picture down (area-free nearest sampling: analysis pictures are small) to
/// RGB `rgb_width` wide and gray [`GRAY_WIDTH`] wide, keeping the aspect ratio.
fn convert(yuv: &impl YUVSource, rgb_width: u32, started: Instant) -> Picture {
    let (w, h) = yuv.dimensions();
    let (ys, us, vs) = yuv.strides();
    let (y, u, v) = (yuv.y(), yuv.u(), yuv.v());
    let rw = (rgb_width as usize).min(w).max(2);
    let rh = (h * rw / w).max(2);
    let mut rgb = Vec::with_capacity(rw * rh * 3);
    for oy in 0..rh {
        let sy = oy * h / rh;
        for ox in 0..rw {
            let sx = ox * w / rw;
            let l = y[sy * ys + sx] as f32 - 16.0;
            let cb = u[(sy / 2) * us + sx / 2] as f32 - 128.0;
            let cr = v[(sy / 2) * vs + sx / 2] as f32 - 128.0;
            let c = 1.164 * l;
            rgb.push((c + 1.596 * cr).clamp(0.0, 255.0) as u8);
            rgb.push((c - 0.392 * cb - 0.813 * cr).clamp(0.0, 255.0) as u8);
            rgb.push((c + 2.017 * cb).clamp(0.0, 255.0) as u8);
        }
    }
    let gw = GRAY_WIDTH.min(w);
    let gh = (h * gw / w).max(1);
    let mut gray = Vec::with_capacity(gw * gh);
    for oy in 0..gh {
        let (y0, y1) = (oy * h / gh, ((oy + 1) * h / gh).max(oy * h / gh + 1));
        for ox in 0..gw {
            let (x0, x1) = (ox * w / gw, ((ox + 1) * w / gw).max(ox * w / gw + 1));
            // A box average: sensor noise and compression artefacts don't look like motion.
            let mut sum = 0u32;
            let mut n = 0u32;
            for yy in (y0..y1).step_by(2) {
                for xx in (x0..x1).step_by(2) {
                    sum += y[yy * ys + xx] as u32;
                    n += 1;
                }
            }
            gray.push((sum / n.max(1)) as u8);
        }
    }
    Picture {
        rgb,
        width: rw as u32,
        height: rh as u32,
        gray,
        gray_width: gw,
        gray_height: gh,
        at: Instant::now(),
        grab: started.elapsed(),
    }
}
