"""What the page sends to the browser besides Gradio's own: its styles and a file-type shim."""

CSS = """
.vt-error{background:#fdecea;color:#8a1c12;border:1px solid #f5c2bd;border-radius:6px;padding:.5rem .75rem}
.vt-ok{display:flex;gap:.6rem;align-items:center;color:#555;font-size:.9rem}
.vt-ok img{height:56px;border-radius:4px}
.vt-report{width:100%;height:78vh;border:0}
"""
# Gradio's picture box takes a file only if the browser gave it an image/* type, and browsers
# without a HEIF codec (Windows, older Linux) give .heic files none: the phone photo would be refused
# before reaching the server. This gives such files their type before Gradio's check, for a file
# chosen (change) or dropped (drop; re-sent with the typed files).
TYPE_SHIM = """() => {
  const TYPES = {heic: "image/heic", heif: "image/heif", hif: "image/heif", avif: "image/avif", jfif: "image/jpeg"};
  const typed = (files) => {
    const list = Array.from(files || []);
    if (!list.some((f) => !f.type && TYPES[f.name.split(".").pop().toLowerCase()])) return null;
    const out = new DataTransfer();
    for (const f of list) {
      const type = f.type || TYPES[f.name.split(".").pop().toLowerCase()] || "";
      out.items.add(f.type ? f : new File([f], f.name, {type, lastModified: f.lastModified}));
    }
    return out;
  };
  document.addEventListener("change", (e) => {
    const input = e.target;
    if (input instanceof HTMLInputElement && input.type === "file") {
      const out = typed(input.files);
      if (out) input.files = out.files;
    }
  }, true);
  document.addEventListener("drop", (e) => {
    const out = e.vlmtuneTyped ? null : typed(e.dataTransfer && e.dataTransfer.files);
    if (!out) return;
    e.stopImmediatePropagation();
    e.preventDefault();
    const again = new DragEvent("drop", {bubbles: true, cancelable: true, dataTransfer: out});
    again.vlmtuneTyped = true;
    e.target.dispatchEvent(again);
  }, true);
}"""
PLACEHOLDER = "Drop a photo here: JPEG, PNG, HEIC straight off a phone, WebP, AVIF...  \nor click to upload, or paste"
