// Kestrel's Swift API over its C ABI (kestrel.h): load a model, classify a CGImage, stream
// generated text as an AsyncThrowingStream, profile on this device. Calls block while the GPU
// works, so every one runs off the caller's actor (a detached task or a worker thread).

import CKestrel
import CoreGraphics
import Foundation

/// A failed Kestrel call: the C ABI's status and the message of `kestrel_last_error()`.
public struct KestrelError: Error, CustomStringConvertible, Sendable {
    /// The `kestrel_status` of the C ABI.
    public enum Status: UInt32, Sendable {
        case invalidArgument = 1, io, format, unsupported, gpu, deviceLost, outOfMemory, cancelled, `internal`
    }

    /// What failed.
    public let status: Status
    /// Why, in words.
    public let message: String

    public var description: String { "Kestrel \(status): \(message)" }

    /// Throws the calling thread's last error unless `status` is KESTREL_OK.
    static func check(_ status: kestrel_status) throws {
        guard status != KESTREL_OK else { return }
        throw KestrelError(status: Status(rawValue: status.rawValue) ?? .internal, message: String(cString: kestrel_last_error()))
    }
}

/// One class of a classification.
public struct ClassScore: Decodable, Sendable {
    public let index: Int
    public let label: String
    public let prob: Double
}

/// The most probable classes, most probable first, and the forward pass's time.
public struct Classification: Decodable, Sendable {
    public let top: [ClassScore]
    public let ms: Double
}

/// A generation request; nil fields take the library's defaults (max_tokens 256, temperature
/// 0.8 — 0 is greedy —, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1, seed 0).
public struct GenerateRequest: Encodable, Sendable {
    public var prompt: String
    /// Render the prompt as a user turn with the model's chat template.
    public var chat: Bool?
    public var system: String?
    public var maxTokens: Int?
    public var temperature: Double?
    public var topK: Int?
    public var topP: Double?
    public var minP: Double?
    public var repeatPenalty: Double?
    public var seed: UInt64?
    /// Strings that end generation.
    public var stop: [String]?

    enum CodingKeys: String, CodingKey {
        case prompt, chat, system, temperature, seed, stop
        case maxTokens = "max_tokens", topK = "top_k", topP = "top_p", minP = "min_p", repeatPenalty = "repeat_penalty"
    }

    public init(prompt: String, chat: Bool? = nil, system: String? = nil, maxTokens: Int? = nil, temperature: Double? = nil,
                topK: Int? = nil, topP: Double? = nil, minP: Double? = nil, repeatPenalty: Double? = nil, seed: UInt64? = nil,
                stop: [String]? = nil) {
        self.prompt = prompt
        self.chat = chat
        self.system = system
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repeatPenalty = repeatPenalty
        self.seed = seed
        self.stop = stop
    }
}

/// The on-device profile of a model.
public struct ProfileReport: Sendable {
    public let p50Ms: Double
    public let p90Ms: Double
    public let peakGpuBytes: UInt64
    /// The profiler's whole JSON: "ops" (the per-op table), "gpu_ms", "timing", "trace" events…
    public let json: String
}

/// Calls `body` with `s` as a NUL-terminated C string, or NULL for nil.
private func withOptionalCString<T>(_ s: String?, _ body: (UnsafePointer<CChar>?) throws -> T) rethrows -> T {
    guard let s else { return try body(nil) }
    return try s.withCString { try body($0) }
}

/// The parts of the profiler's JSON that ProfileReport lifts out.
private struct ProfileSummary: Decodable {
    struct Latency: Decodable {
        let p50: Double
        let p90: Double
    }

    let latency_ms: Latency
    let peak_gpu_bytes: UInt64
}

/// Receives the pieces of one kestrel_generate call (its user_data).
private final class StreamSink {
    let continuation: AsyncThrowingStream<String, Error>.Continuation
    /// Set when the consumer went away: the callback then asks the C call to stop.
    var stopped = false
    private let lock = NSLock()

    init(_ continuation: AsyncThrowingStream<String, Error>.Continuation) {
        self.continuation = continuation
    }

    func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
    }

    var isStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopped
    }
}

/// A Kestrel model on this device's GPU: an image classifier (SLAB) or a text generator (GGUF,
/// Hugging Face directory, Kestrel file). Calls on one model are serialised by the library;
/// different models run at once. A model whose device was lost (`.deviceLost`) is loaded again.
public final class KestrelModel: @unchecked Sendable {
    private let handle: OpaquePointer

    private init(handle: OpaquePointer) {
        self.handle = handle
    }

    deinit {
        kestrel_model_free(handle)
    }

    /// The C ABI version of the linked library (`KESTREL_ABI_VERSION`).
    public static var abiVersion: UInt32 { kestrel_abi_version() }

    /// Loads the model at `path` on its own GPU context. `options`: nil or the C ABI's model
    /// options JSON ({"kind", "quant", "arch", "top", "context"}); `runtimeOptions`: nil or
    /// {"backend", "adapter", "cache_dir", "weight_textures"}.
    public static func load(path: String, options: String? = nil, runtimeOptions: String? = nil) async throws -> KestrelModel {
        try await Task.detached {
            var runtime: OpaquePointer?
            try withOptionalCString(runtimeOptions) { try KestrelError.check(kestrel_runtime_create($0, &runtime)) }
            // The model keeps the GPU context alive; the runtime handle is not needed after.
            defer { kestrel_runtime_free(runtime) }
            var model: OpaquePointer?
            try withOptionalCString(options) { try KestrelError.check(kestrel_model_load(runtime, path, $0, &model)) }
            guard let model else { throw KestrelError(status: .internal, message: "kestrel_model_load returned no model") }
            return KestrelModel(handle: model)
        }.value
    }

    /// Takes a result string of the C ABI (and frees it).
    private static func take(_ json: UnsafeMutablePointer<CChar>?) -> String {
        guard let json else { return "" }
        defer { kestrel_string_free(json) }
        return String(cString: json)
    }

    /// Classifies `image` (drawn into RGBA8 rows first; the model resizes and crops it).
    public func classify(_ image: CGImage) async throws -> Classification {
        try await Task.detached { [self] in
            let width = image.width, height = image.height, stride = width * 4
            var pixels = [UInt8](repeating: 0, count: stride * height)
            let drawn = pixels.withUnsafeMutableBytes { buffer -> Bool in
                guard let context = CGContext(data: buffer.baseAddress, width: width, height: height, bitsPerComponent: 8,
                                              bytesPerRow: stride, space: CGColorSpaceCreateDeviceRGB(),
                                              bitmapInfo: CGImageAlphaInfo.premultipliedLast.rawValue | CGBitmapInfo.byteOrder32Big.rawValue)
                else { return false }
                context.draw(image, in: CGRect(x: 0, y: 0, width: width, height: height))
                return true
            }
            guard drawn else { throw KestrelError(status: .invalidArgument, message: "could not draw the \(width)x\(height) image into RGBA8") }
            return try classify(rgba: pixels, width: width, height: height, stride: stride)
        }.value
    }

    /// Classifies raw RGBA8 rows (`stride` bytes apart). Blocks: call it off the main thread.
    public func classify(rgba pixels: [UInt8], width: Int, height: Int, stride: Int) throws -> Classification {
        guard let w = UInt32(exactly: width), let h = UInt32(exactly: height), let s = UInt32(exactly: stride),
              height > 0, stride >= width * 4, pixels.count >= (height - 1) * stride + width * 4
        else { throw KestrelError(status: .invalidArgument, message: "\(pixels.count) bytes do not hold a \(width)x\(height) RGBA8 image with stride \(stride)") }
        var json: UnsafeMutablePointer<CChar>?
        try pixels.withUnsafeBufferPointer { buffer in
            var image = kestrel_image(data: buffer.baseAddress, width: w, height: h, stride: s, format: KESTREL_PIXEL_RGBA8)
            try KestrelError.check(kestrel_classify(handle, &image, &json))
        }
        return try JSONDecoder().decode(Classification.self, from: Data(Self.take(json).utf8))
    }

    /// Streams the text generated for `request`, piece by piece (whole characters; the pieces
    /// concatenate to the text). Generation runs on its own thread; ending the iteration (or
    /// cancelling the consuming task) stops it at the next token. Each call starts from an
    /// empty KV cache.
    public func generate(_ request: GenerateRequest) -> AsyncThrowingStream<String, Error> {
        AsyncThrowingStream { continuation in
            let json: String
            do {
                json = String(decoding: try JSONEncoder().encode(request), as: UTF8.self)
            } catch {
                continuation.finish(throwing: error)
                return
            }
            let sink = StreamSink(continuation)
            continuation.onTermination = { [self] termination in
                if case .cancelled = termination {
                    sink.stop()
                    kestrel_model_cancel(handle)
                }
            }
            let thread = Thread { [self] in
                let onToken: kestrel_token_fn = { piece, userData in
                    guard let piece, let userData else { return 1 }
                    let sink = Unmanaged<StreamSink>.fromOpaque(userData).takeUnretainedValue()
                    if sink.isStopped { return 1 }
                    sink.continuation.yield(String(cString: piece))
                    return 0
                }
                var result: UnsafeMutablePointer<CChar>?
                let status = kestrel_generate(handle, json, nil, onToken, Unmanaged.passUnretained(sink).toOpaque(), &result)
                _ = Self.take(result)
                do {
                    try KestrelError.check(status)
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            thread.name = "kestrel-generate"
            thread.start()
        }
    }

    /// Profiles the model on this device: `iters` timed runs of a classifier's forward pass or
    /// a generator's decode step, with the per-op table and (when `trace`) Chrome trace events.
    public func profile(iters: Int = 5, trace: Bool = false) async throws -> ProfileReport {
        try await Task.detached { [self] in
            var json: UnsafeMutablePointer<CChar>?
            try KestrelError.check(kestrel_model_profile(handle, "{\"iters\": \(iters), \"trace\": \(trace)}", &json))
            let text = Self.take(json)
            let s = try JSONDecoder().decode(ProfileSummary.self, from: Data(text.utf8))
            return ProfileReport(p50Ms: s.latency_ms.p50, p90Ms: s.latency_ms.p90, peakGpuBytes: s.peak_gpu_bytes, json: text)
        }.value
    }

    /// Stops the running generation or profile at its next token (it then ends with `.cancelled`).
    public func cancel() {
        kestrel_model_cancel(handle)
    }
}
