//! The test picture: colour bars, a moving box, a visible clock and frame counter, and a
//! machine-readable capture-time strip, drawn straight into an I420 buffer.
//!
//! ## The time strip
//! 64 blocks across the top edge of the picture, each `width / 64` pixels wide and
//! [`strip_height`] pixels tall, white (luma 235) for a 1 bit and black (luma 16) for a 0 bit,
//! most significant bit first:
//!
//! | bits  | content                                                   |
//! |-------|-----------------------------------------------------------|
//! | 0–7   | marker `0b1011_0010`, so a reader can tell the strip is there |
//! | 8–55  | capture time, milliseconds since the Unix epoch (48 bits) |
//! | 56–63 | XOR of the six timestamp bytes, a check                   |
//!
//! A browser reads it back from decoded pixels (sample the centre of each block, threshold at
//! luma 128) to measure glass-to-glass latency; [`read_time_strip`] is the reference reader.

use openh264::formats::YUVSource;

use super::font::{glyph, GLYPH_H, GLYPH_W};

const STRIP_MARKER: u8 = 0b1011_0010;
const WHITE: u8 = 235;
const BLACK: u8 = 16;

pub struct Picture {
    width: usize,
    height: usize,
    /// Y plane then U then V, tightly packed.
    data: Vec<u8>,
    /// The static background (colour bars), copied in before drawing each frame.
    background: Vec<u8>,
}

/// Colour bars as (Y, U, V): white, yellow, cyan, green, magenta, red, blue, grey.
const BARS: [(u8, u8, u8); 8] = [
    (180, 128, 128),
    (168, 44, 136),
    (145, 147, 44),
    (133, 63, 52),
    (63, 193, 204),
    (51, 109, 212),
    (28, 212, 120),
    (90, 128, 128),
];

pub fn strip_height(height: usize) -> usize {
    (height / 45).max(4)
}

impl Picture {
    pub fn new(width: usize, height: usize) -> Picture {
        let mut background = vec![0u8; width * height * 3 / 2];
        let (y, uv) = background.split_at_mut(width * height);
        let (u, v) = uv.split_at_mut(width * height / 4);
        for row in 0..height {
            for col in 0..width {
                y[row * width + col] = BARS[col * BARS.len() / width].0;
            }
        }
        for row in 0..height / 2 {
            for col in 0..width / 2 {
                let bar = BARS[col * 2 * BARS.len() / width];
                u[row * width / 2 + col] = bar.1;
                v[row * width / 2 + col] = bar.2;
            }
        }
        Picture {
            width,
            height,
            data: background.clone(),
            background,
        }
    }

    /// Draws frame number `sequence`, captured at `unix_ms`. `motion` moves the box.
    pub fn draw(&mut self, sequence: u64, unix_ms: u64, motion: bool) {
        self.data.copy_from_slice(&self.background);
        let (w, h) = (self.width, self.height);

        // The moving box bounces left and right across the middle band.
        let side = (h / 5).max(8) & !1;
        let travel = w.saturating_sub(side).max(1);
        let step = (w / 100).max(2);
        let pos = if motion {
            let phase = (sequence as usize * step) % (2 * travel);
            if phase < travel {
                phase
            } else {
                2 * travel - phase
            }
        } else {
            travel / 2
        };
        self.fill_rect(
            pos & !1,
            (h / 2 - side / 2) & !1,
            side,
            side,
            (WHITE, 128, 128),
        );

        // Clock and frame counter, on a dark panel so they stay readable over the bars.
        let scale = (h / 120).max(1);
        let secs = unix_ms / 1000;
        let clock = format!(
            "{:02}:{:02}:{:02}.{:03} UTC",
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            unix_ms % 1000
        );
        let counter = format!("#{sequence:06}");
        let line_h = (GLYPH_H + 2) * scale;
        let panel_y = h - 2 * line_h - 2 * scale;
        let panel_w = (clock.len() * (GLYPH_W + 1) + 2) * scale;
        self.fill_rect(
            0,
            panel_y & !1,
            panel_w.min(w) & !1,
            h - (panel_y & !1),
            (BLACK, 128, 128),
        );
        self.text(&clock, scale, scale, panel_y + scale);
        self.text(&counter, scale, scale, panel_y + scale + line_h);

        self.draw_time_strip(unix_ms);
    }

    fn draw_time_strip(&mut self, unix_ms: u64) {
        let bits = encode_strip(unix_ms);
        let block = self.width / 64;
        let strip_h = strip_height(self.height).min(self.height);
        let (w, h) = (self.width, self.height);
        for i in 0..64 {
            let on = bits >> (63 - i) & 1 == 1;
            let luma = if on { WHITE } else { BLACK };
            for row in 0..strip_h {
                let start = row * w + i * block;
                self.data[start..start + block].fill(luma);
            }
        }
        // Neutral chroma under the strip so colour bleeding can't move the luma threshold.
        let (_, uv) = self.data.split_at_mut(w * h);
        for row in 0..strip_h.div_ceil(2) {
            uv[row * w / 2..row * w / 2 + w / 2].fill(128);
            let v_start = w * h / 4 + row * w / 2;
            uv[v_start..v_start + w / 2].fill(128);
        }
    }

    fn text(&mut self, text: &str, scale: usize, x: usize, y: usize) {
        let mut cx = x;
        for c in text.chars() {
            let g = glyph(c);
            for (gy, bits) in g.iter().enumerate() {
                for gx in 0..GLYPH_W {
                    if bits >> (GLYPH_W - 1 - gx) & 1 == 1 {
                        self.fill_luma(cx + gx * scale, y + gy * scale, scale, scale, WHITE);
                    }
                }
            }
            cx += (GLYPH_W + 1) * scale;
        }
    }

    fn fill_luma(&mut self, x: usize, y: usize, w: usize, h: usize, luma: u8) {
        let x_end = (x + w).min(self.width);
        for row in y..(y + h).min(self.height) {
            if x < x_end {
                self.data[row * self.width + x..row * self.width + x_end].fill(luma);
            }
        }
    }

    /// Fills a rectangle with a colour; x, y, w, h should be even (chroma is subsampled by 2).
    fn fill_rect(&mut self, x: usize, y: usize, w: usize, h: usize, (cy, cu, cv): (u8, u8, u8)) {
        self.fill_luma(x, y, w, h, cy);
        let (cw, ch) = (self.width / 2, self.height / 2);
        let (x2, y2) = (x / 2, y / 2);
        let x2_end = ((x + w) / 2).min(cw);
        let plane = self.width * self.height;
        for row in y2..((y + h) / 2).min(ch) {
            if x2 < x2_end {
                let u = plane + row * cw;
                self.data[u + x2..u + x2_end].fill(cu);
                let v = plane + cw * ch + row * cw;
                self.data[v + x2..v + x2_end].fill(cv);
            }
        }
    }
}

impl YUVSource for Picture {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }
    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }
    fn y(&self) -> &[u8] {
        &self.data[..self.width * self.height]
    }
    fn u(&self) -> &[u8] {
        let plane = self.width * self.height;
        &self.data[plane..plane + plane / 4]
    }
    fn v(&self) -> &[u8] {
        let plane = self.width * self.height;
        &self.data[plane + plane / 4..]
    }
}

fn encode_strip(unix_ms: u64) -> u64 {
    let ts = unix_ms & 0xffff_ffff_ffff;
    let check = ts.to_be_bytes()[2..].iter().fold(0u8, |a, b| a ^ b);
    (STRIP_MARKER as u64) << 56 | ts << 8 | check as u64
}

/// Reads the capture time (Unix ms) from the time strip of a decoded luma plane. `None` when the
/// strip is absent or damaged (marker or check does not match).
pub fn read_time_strip(luma: &[u8], width: usize, height: usize, stride: usize) -> Option<u64> {
    let block = width / 64;
    let row = strip_height(height) / 2;
    if block == 0 || row >= height || luma.len() < row * stride + width {
        return None;
    }
    let mut bits = 0u64;
    for i in 0..64 {
        let sample = luma[row * stride + i * block + block / 2];
        bits = bits << 1 | u64::from(sample >= 128);
    }
    let marker = (bits >> 56) as u8;
    let ts = bits >> 8 & 0xffff_ffff_ffff;
    let check = ts.to_be_bytes()[2..].iter().fold(0u8, |a, b| a ^ b);
    (marker == STRIP_MARKER && check == bits as u8).then_some(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_strip_round_trip_on_raw_pixels() {
        let mut p = Picture::new(1280, 720);
        let t = 1_795_000_123_456;
        p.draw(7, t, true);
        assert_eq!(read_time_strip(p.y(), 1280, 720, 1280), Some(t));
    }

    #[test]
    fn time_strip_absent_on_plain_picture() {
        let p = Picture::new(640, 360);
        assert_eq!(read_time_strip(p.y(), 640, 360, 640), None);
    }

    #[test]
    fn motion_off_keeps_the_box_still() {
        let mut a = Picture::new(320, 240);
        let mut b = Picture::new(320, 240);
        a.draw(1, 0, false);
        b.draw(40, 0, false);
        // The counter differs, but nothing above the text panel does.
        let panel_top = 240 - 2 * (GLYPH_H + 2) * 2 - 4;
        assert_eq!(a.y()[..panel_top * 320], b.y()[..panel_top * 320]);
        a.draw(1, 0, true);
        b.draw(40, 0, true);
        assert_ne!(a.y()[..panel_top * 320], b.y()[..panel_top * 320]);
    }
}
