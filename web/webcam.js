// "Use my camera": this browser's webcam and microphone, published over WHIP (RFC 9725) to a
// camera whose source is `publish:`. livelens then serves, records and analyses it like any
// other camera. Plain ES module, no build step.
//
// livelens answers as an ICE-lite server with its candidates in the answer, so the offer goes
// out at once (no waiting for this side's candidates). H.264 is preferred: it is what every
// output of livelens carries as it is (the browser would pick VP8 first).

export class Webcam {
  constructor() {
    this.pc = null;
    this.media = null;
    this.location = null;
    this.onPageHide = () => this.leave();
  }

  get live() {
    return this.pc !== null;
  }

  // Publishes to camera `id`; `token` (may be null) is sent as Bearer. Throws with the server's
  // message when the camera refuses (not a publish: camera, another publisher is live, ...).
  async start(id, token) {
    await this.stop();
    this.media = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 25 } },
      audio: true,
    });
    const pc = new RTCPeerConnection();
    this.pc = pc;
    for (const track of this.media.getTracks()) {
      const transceiver = pc.addTransceiver(track, { direction: "sendonly", streams: [this.media] });
      if (track.kind === "video" && transceiver.setCodecPreferences) {
        const h264 = RTCRtpSender.getCapabilities("video").codecs.filter(
          (c) => c.mimeType === "video/H264" && /packetization-mode=1/.test(c.sdpFmtpLine || ""),
        );
        if (h264.length) transceiver.setCodecPreferences(h264);
      }
    }
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const headers = { "content-type": "application/sdp" };
    if (token) headers.authorization = `Bearer ${token}`;
    const r = await fetch(`/api/cameras/${encodeURIComponent(id)}/whip`, { method: "POST", headers, body: offer.sdp });
    if (r.status !== 201) {
      let message = `WHIP ${r.status}`;
      try { message = (await r.json()).error || message; } catch { /* not JSON */ }
      await this.stop();
      throw new Error(message);
    }
    this.location = new URL(r.headers.get("location"), r.url).href;
    this.token = token;
    await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
    addEventListener("pagehide", this.onPageHide);
  }

  // Ends the publication: the camera goes idle at once rather than after its timeout.
  async stop() {
    removeEventListener("pagehide", this.onPageHide);
    this.leave();
    this.pc?.close();
    this.pc = null;
    for (const t of this.media?.getTracks() || []) t.stop();
    this.media = null;
  }

  // The WHIP DELETE, sent even as the page goes away (keepalive).
  leave() {
    if (!this.location) return;
    const headers = this.token ? { authorization: `Bearer ${this.token}` } : {};
    fetch(this.location, { method: "DELETE", headers, keepalive: true }).catch(() => {});
    this.location = null;
  }
}
