package dev.kestrel;

import java.awt.image.BufferedImage;
import java.io.File;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;
import javax.imageio.ImageIO;

/**
 * The JNI layer (libkestrel_jni.so built for the host) driven from the host JVM through the same
 * NativeBridge class the Android library uses. Run by scripts/test-android.sh:
 *
 * <pre>java -Djava.library.path=target/debug -cp CLASSES dev.kestrel.HostTest SLAB PHOTO TOP1 [GGUF]</pre>
 *
 * SLAB: the SLAB-DeiT test model (capi's slab_fixture example); PHOTO: a BMP; TOP1: the class
 * `kestrel classify` gives it; GGUF: the SmolLM2 file of scripts/fetch-test-weights.sh (the
 * generation checks are skipped without it). Prints "N passed, M failed".
 */
public final class HostTest {
    private static int passed;
    private static final List<String> failures = new ArrayList<>();

    private HostTest() {}

    /** A check that throws AssertionError (or anything else) on failure. */
    private interface Check {
        void run() throws Exception;
    }

    private static void check(String name, Check body) {
        try {
            body.run();
            passed++;
            System.out.println("ok   " + name);
        } catch (Throwable t) {
            failures.add(name);
            System.out.println("FAIL " + name + ": " + t);
            t.printStackTrace(System.out);
        }
    }

    private static void expect(boolean condition, String what) {
        if (!condition) {
            throw new AssertionError(what);
        }
    }

    /** Runs body, which must throw a KestrelException with this status and a message containing text. */
    private static void throwsStatus(int status, String text, Check body) throws Exception {
        try {
            body.run();
        } catch (KestrelException e) {
            expect(e.status == status, "status " + e.status + " (" + e.getMessage() + "), expected " + status);
            expect(e.getMessage() != null && e.getMessage().contains(text), "message \"" + e.getMessage() + "\" lacks \"" + text + "\"");
            return;
        }
        throw new AssertionError("no KestrelException (expected status " + status + ")");
    }

    /** The photo as RGBA8 rows with 12 bytes of padding after each: a strided image. */
    private static ByteBuffer rgba(BufferedImage img, int stride) {
        ByteBuffer buf = ByteBuffer.allocateDirect(stride * img.getHeight());
        for (int y = 0; y < img.getHeight(); y++) {
            buf.position(y * stride);
            for (int x = 0; x < img.getWidth(); x++) {
                int argb = img.getRGB(x, y);
                buf.put((byte) (argb >> 16)).put((byte) (argb >> 8)).put((byte) argb).put((byte) (argb >>> 24));
            }
        }
        return buf;
    }

    /** The first integer after "key": in a JSON text. */
    private static long number(String json, String key) {
        int at = json.indexOf("\"" + key + "\":");
        expect(at >= 0, "no \"" + key + "\" in " + json);
        int i = at + key.length() + 3;
        int j = i;
        while (j < json.length() && (Character.isDigit(json.charAt(j)) || json.charAt(j) == '-')) {
            j++;
        }
        return Long.parseLong(json.substring(i, j));
    }

    /** The string value of "key" in a JSON text, unescaped. */
    private static String string(String json, String key) {
        int at = json.indexOf("\"" + key + "\":\"");
        expect(at >= 0, "no string \"" + key + "\" in " + json);
        StringBuilder out = new StringBuilder();
        for (int i = at + key.length() + 4; i < json.length(); i++) {
            char c = json.charAt(i);
            if (c == '"') {
                return out.toString();
            }
            if (c != '\\') {
                out.append(c);
                continue;
            }
            char e = json.charAt(++i);
            switch (e) {
                case 'n' -> out.append('\n');
                case 't' -> out.append('\t');
                case 'r' -> out.append('\r');
                case 'b' -> out.append('\b');
                case 'f' -> out.append('\f');
                case 'u' -> {
                    out.append((char) Integer.parseInt(json.substring(i + 1, i + 5), 16));
                    i += 4;
                }
                default -> out.append(e);
            }
        }
        throw new AssertionError("unterminated string \"" + key + "\" in " + json);
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: HostTest SLAB PHOTO TOP1 [GGUF]");
            System.exit(2);
        }
        String slab = args[0];
        BufferedImage photo = ImageIO.read(new File(args[1]));
        long top1 = Long.parseLong(args[2]);
        String gguf = args.length > 3 && !args[3].isEmpty() ? args[3] : null;
        int w = photo.getWidth();
        int h = photo.getHeight();
        int stride = w * 4 + 12;
        ByteBuffer pixels = rgba(photo, stride);

        check("abi version", () -> expect(NativeBridge.abiVersion() == 1, "abi " + NativeBridge.abiVersion()));
        check("malformed runtime options throw", () -> throwsStatus(KestrelException.INVALID_ARGUMENT, "options", () -> NativeBridge.runtimeCreate("{\"backend\": ")));
        long runtime = NativeBridge.runtimeCreate(null);
        check("runtime created", () -> expect(runtime != 0, "null runtime"));
        check("a missing file throws IO with its path", () -> throwsStatus(KestrelException.IO, "/nonexistent/model.kestrel", () -> NativeBridge.modelLoad(runtime, "/nonexistent/model.kestrel", null)));
        check("a null runtime throws", () -> throwsStatus(KestrelException.INVALID_ARGUMENT, "runtime is NULL", () -> NativeBridge.modelLoad(0, slab, null)));
        check("a null path throws", () -> throwsStatus(KestrelException.INVALID_ARGUMENT, "path is NULL", () -> NativeBridge.modelLoad(runtime, null, null)));
        check("unknown model options throw", () -> throwsStatus(KestrelException.INVALID_ARGUMENT, "colour", () -> NativeBridge.modelLoad(runtime, slab, "{\"colour\": 1}")));

        long classifier = NativeBridge.modelLoad(runtime, slab, null);
        check("classify strided RGBA: kestrel classify's top-1", () -> {
            String json = NativeBridge.classify(classifier, pixels, w, h, stride, 0);
            expect(number(json, "index") == top1, "top-1 " + number(json, "index") + " != " + top1 + ": " + json);
        });
        check("a short buffer throws", () -> throwsStatus(KestrelException.INVALID_ARGUMENT, "needs", () -> NativeBridge.classify(classifier, ByteBuffer.allocateDirect(16), w, h, stride, 0)));
        check("a heap buffer throws", () -> throwsStatus(KestrelException.INVALID_ARGUMENT, "direct", () -> NativeBridge.classify(classifier, ByteBuffer.allocate(stride * h), w, h, stride, 0)));
        check("a null buffer throws", () -> throwsStatus(KestrelException.INVALID_ARGUMENT, "pixels is null", () -> NativeBridge.classify(classifier, null, w, h, stride, 0)));
        check("a zero-size image throws", () -> throwsStatus(KestrelException.INVALID_ARGUMENT, "empty", () -> NativeBridge.classify(classifier, pixels, 0, h, stride, 0)));
        check("a short stride throws", () -> throwsStatus(KestrelException.INVALID_ARGUMENT, "stride", () -> NativeBridge.classify(classifier, pixels, w, h, w, 0)));
        check("a negative side throws", () -> throwsStatus(KestrelException.INVALID_ARGUMENT, "negative", () -> NativeBridge.classify(classifier, pixels, -1, h, stride, 0)));
        check("an unknown pixel format throws", () -> throwsStatus(KestrelException.INVALID_ARGUMENT, "pixel format 7", () -> NativeBridge.classify(classifier, pixels, w, h, stride, 7)));
        check("a null model throws", () -> throwsStatus(KestrelException.INVALID_ARGUMENT, "model is NULL", () -> NativeBridge.classify(0, pixels, w, h, stride, 0)));
        check("generating with a classifier throws", () -> throwsStatus(KestrelException.UNSUPPORTED, "does not generate", () -> NativeBridge.generate(classifier, "{\"prompt\": \"hi\"}", null)));
        check("profile a classifier", () -> {
            String json = NativeBridge.profile(classifier, "{\"iters\": 1, \"trace\": false}");
            expect(json.contains("\"latency_ms\"") && json.contains("\"ops\""), json);
        });
        check("frees ignore 0", () -> {
            NativeBridge.modelFree(0);
            NativeBridge.runtimeFree(0);
            NativeBridge.modelCancel(0);
        });

        if (gguf == null) {
            System.out.println("skip generation: no SmolLM2 GGUF (scripts/fetch-test-weights.sh)");
        } else {
            long generator = NativeBridge.modelLoad(runtime, gguf, null);
            String greedy = "{\"prompt\": \"The capital of France is\", \"temperature\": 0, \"max_tokens\": 8}";
            check("stream: SmolLM2 says Paris, pieces = text", () -> {
                StringBuilder streamed = new StringBuilder();
                String json = NativeBridge.generate(generator, greedy, piece -> {
                    streamed.append(piece);
                    return true;
                });
                String text = string(json, "text");
                expect(text.contains("Paris"), "text \"" + text + "\"");
                expect(streamed.toString().equals(text), "streamed \"" + streamed + "\" != \"" + text + "\"");
                expect(string(json, "finish").equals("length") || string(json, "finish").equals("eos"), json);
            });
            check("a callback returning false stops", () -> {
                StringBuilder streamed = new StringBuilder();
                String json = NativeBridge.generate(generator, greedy, piece -> {
                    streamed.append(piece);
                    return false;
                });
                expect(string(json, "finish").equals("cancelled"), json);
                expect(string(json, "text").equals(streamed.toString()), json + " vs " + streamed);
            });
            check("a callback's exception reaches the caller", () -> {
                IllegalStateException thrown = new IllegalStateException("stop here");
                try {
                    NativeBridge.generate(generator, greedy, piece -> {
                        throw thrown;
                    });
                    throw new AssertionError("no exception");
                } catch (IllegalStateException e) {
                    expect(e == thrown, "another exception: " + e);
                }
            });
            check("cancel from another thread", () -> {
                AtomicReference<Thread> canceller = new AtomicReference<>();
                throwsStatus(KestrelException.CANCELLED, "cancel", () -> NativeBridge.generate(generator, "{\"prompt\": \"Once upon a time\", \"temperature\": 0, \"max_tokens\": 64}", piece -> {
                    if (canceller.get() == null) {
                        Thread t = new Thread(() -> NativeBridge.modelCancel(generator));
                        canceller.set(t);
                        t.start();
                        try {
                            t.join();
                        } catch (InterruptedException e) {
                            throw new IllegalStateException(e);
                        }
                    }
                    return true;
                }));
            });
            check("the model works after a cancel; no callback", () -> {
                String json = NativeBridge.generate(generator, greedy, null);
                expect(string(json, "text").contains("Paris"), json);
            });
            check("malformed requests throw", () -> throwsStatus(KestrelException.INVALID_ARGUMENT, "request", () -> NativeBridge.generate(generator, "{\"prompt\": 3}", null)));
            check("profile a generator", () -> {
                String json = NativeBridge.profile(generator, "{\"iters\": 1, \"trace\": false}");
                expect(json.contains("\"latency_ms\""), json);
            });
            NativeBridge.modelFree(generator);
        }
        NativeBridge.modelFree(classifier);
        NativeBridge.runtimeFree(runtime);

        System.out.println(passed + " passed, " + failures.size() + " failed");
        if (!failures.isEmpty()) {
            System.out.println("failed: " + String.join(", ", failures));
            System.exit(1);
        }
    }
}
