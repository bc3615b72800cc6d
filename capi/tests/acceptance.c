/* The acceptance program of kestrel.h, using only its core functions: SmolLM2 generates
 * "Paris" for "The capital of France is" (streamed pieces = final text), stops when its
 * callback asks, is cancelled from a second thread, refuses re-entry from its callback; a
 * photo classified from raw RGBA bytes (strided rows) has the top-1 of `kestrel classify`;
 * two models run on two threads; both models give profile JSON.
 * Usage: acceptance SLAB_MODEL PHOTO.bmp EXPECTED_TOP1 GGUF */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "common.h"

/* What a generation callback collects. */
typedef struct {
    char text[8192];
    size_t len;
    int pieces;
    int stop_after;         /* return non-zero after this many pieces (0: never) */
    kestrel_model *model;   /* for the re-entry check */
    int reentry_status;     /* what a call on `model` from inside the callback returned */
    atomic_int first_piece; /* set at the first piece (the canceller waits for it) */
} collector;

static int collect(const char *piece, void *user_data) {
    collector *c = user_data;
    size_t n = strlen(piece);
    if (c->len + n < sizeof c->text) {
        memcpy(c->text + c->len, piece, n + 1);
        c->len += n;
    }
    c->pieces++;
    atomic_store(&c->first_piece, 1);
    if (c->model && c->reentry_status < 0) {
        char *out = NULL;
        c->reentry_status = (int)kestrel_generate(c->model, "{\"prompt\": \"x\"}", NULL, NULL, NULL, &out);
        kestrel_string_free(out);
    }
    return c->stop_after > 0 && c->pieces >= c->stop_after;
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

typedef struct {
    kestrel_model *model;
    collector *seen;
} cancel_job;

static void *canceller(void *arg) {
    cancel_job *job = arg;
    while (!atomic_load(&job->seen->first_piece)) sleep_ms(5);
    kestrel_model_cancel(job->model);
    return NULL;
}

typedef struct {
    kestrel_model *model;
    const kestrel_image *image;
    const char *request;
    int status;
    char *result;
    int rounds;
} run_job;

static void *classify_job(void *arg) {
    run_job *job = arg;
    for (int i = 0; i < job->rounds && job->status == KESTREL_OK; i++) {
        kestrel_string_free(job->result);
        job->result = NULL;
        job->status = (int)kestrel_classify(job->model, job->image, &job->result);
    }
    return NULL;
}

static void *generate_job(void *arg) {
    run_job *job = arg;
    job->status = (int)kestrel_generate(job->model, job->request, NULL, NULL, NULL, &job->result);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s SLAB_MODEL PHOTO.bmp EXPECTED_TOP1 GGUF\n", argv[0]);
        return 2;
    }
    const char *slab = argv[1], *photo = argv[2], *gguf = argv[4];
    int expected_top1 = atoi(argv[3]);
    CHECK(kestrel_abi_version() == KESTREL_ABI_VERSION, "abi");

    kestrel_runtime *rt = NULL;
    EXPECT_STATUS(kestrel_runtime_create(NULL, &rt), KESTREL_OK);
    kestrel_model *clf = NULL, *llm = NULL;
    EXPECT_STATUS(kestrel_model_load(rt, slab, NULL, &clf), KESTREL_OK);
    EXPECT_STATUS(kestrel_model_load(rt, gguf, "{\"context\": 256}", &llm), KESTREL_OK);
    if (!clf || !llm) return 1;

    /* Classification from raw RGBA rows with 12 bytes of padding each. */
    uint32_t w, h, stride;
    uint8_t *rgba = read_bmp_rgba(photo, &w, &h, 12, &stride);
    CHECK(rgba != NULL, "cannot read %s", photo);
    if (!rgba) return 1;
    kestrel_image image = {rgba, w, h, stride, KESTREL_PIXEL_RGBA8};
    char *result = NULL;
    EXPECT_STATUS(kestrel_classify(clf, &image, &result), KESTREL_OK);
    CHECK(result && (int)json_number(result, "index") == expected_top1, "top-1 %s, kestrel classify says %d", result,
          expected_top1);
    printf("classify: %s\n", result);
    char *single_classification = result;

    /* Generation: "Paris", streamed pieces = final text. */
    collector c = {0};
    c.reentry_status = 0; /* no re-entry in this run */
    const char *paris = "{\"prompt\": \"The capital of France is\", \"temperature\": 0, \"max_tokens\": 8}";
    EXPECT_STATUS(kestrel_generate(llm, paris, NULL, collect, &c, &result), KESTREL_OK);
    char *text = result ? json_string(result, "text") : NULL;
    CHECK(text && strstr(text, "Paris"), "text: %s", text ? text : "(none)");
    CHECK(text && strcmp(text, c.text) == 0, "streamed \"%s\" != text \"%s\"", c.text, text ? text : "");
    CHECK(c.pieces > 0, "no pieces");
    printf("generate: %s\n", result);
    char *single_generation = text;
    kestrel_string_free(result);

    /* The callback stops generation after 2 pieces. */
    collector stop = {0};
    stop.stop_after = 2;
    const char *longer = "{\"prompt\": \"The capital of France is\", \"temperature\": 0, \"max_tokens\": 32}";
    EXPECT_STATUS(kestrel_generate(llm, longer, NULL, collect, &stop, &result), KESTREL_OK);
    text = result ? json_string(result, "text") : NULL;
    char *finish = result ? json_string(result, "finish") : NULL;
    CHECK(stop.pieces == 2, "%d pieces after asking to stop at 2", stop.pieces);
    CHECK(finish && strcmp(finish, "cancelled") == 0, "finish %s", finish ? finish : "(none)");
    CHECK(text && strcmp(text, stop.text) == 0, "streamed \"%s\" != text \"%s\"", stop.text, text ? text : "");
    free(text);
    free(finish);
    kestrel_string_free(result);

    /* Re-entering the model from its own callback is an error, not a deadlock. */
    collector re = {0};
    re.model = llm;
    re.reentry_status = -1;
    re.stop_after = 1;
    EXPECT_STATUS(kestrel_generate(llm, longer, NULL, collect, &re, &result), KESTREL_OK);
    CHECK(re.reentry_status == KESTREL_ERR_INVALID_ARGUMENT, "re-entry returned %d", re.reentry_status);
    kestrel_string_free(result);

    /* Cancellation from a second thread once the first piece arrived. */
    collector cancelled = {0};
    cancel_job job = {llm, &cancelled};
    pthread_t t;
    pthread_create(&t, NULL, canceller, &job);
    result = (char *)1;
    const char *many = "{\"prompt\": \"The capital of France is\", \"temperature\": 0, \"max_tokens\": 64, \"stop\": [\"\\n\\n\\n\\n\"]}";
    EXPECT_STATUS(kestrel_generate(llm, many, NULL, collect, &cancelled, &result), KESTREL_ERR_CANCELLED);
    pthread_join(t, NULL);
    CHECK(result == NULL, "result set on cancel");
    CHECK(cancelled.pieces < 64, "%d pieces despite the cancel", cancelled.pieces);

    /* Two models on two threads at once give what they give alone. */
    run_job a = {clf, &image, NULL, KESTREL_OK, NULL, 3};
    run_job b = {llm, NULL, paris, KESTREL_OK, NULL, 1};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, classify_job, &a);
    pthread_create(&tb, NULL, generate_job, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(a.status == KESTREL_OK && b.status == KESTREL_OK, "threads: %d %d", a.status, b.status);
    CHECK(a.result && (int)json_number(a.result, "index") == expected_top1, "threaded classify %s", a.result);
    CHECK(a.result && json_number(a.result, "prob") == json_number(single_classification, "prob"), "threaded prob differs");
    text = b.result ? json_string(b.result, "text") : NULL;
    CHECK(text && strcmp(text, single_generation) == 0, "threaded text \"%s\" != \"%s\"", text ? text : "", single_generation);
    free(text);
    kestrel_string_free(a.result);
    kestrel_string_free(b.result);

    /* Profiles. */
    EXPECT_STATUS(kestrel_model_profile(clf, "{\"iters\": 2}", &result), KESTREL_OK);
    CHECK(result && strstr(result, "\"ops\":[{") && json_number(result, "p50") > 0 && strstr(result, "\"trace\":"),
          "profile %s", result ? result : "(none)");
    kestrel_string_free(result);
    EXPECT_STATUS(kestrel_model_profile(llm, "{\"iters\": 2, \"trace\": false}", &result), KESTREL_OK);
    CHECK(result && strstr(result, "\"ops\":[{") && json_number(result, "peak_gpu_bytes") > 0, "profile %s",
          result ? result : "(none)");
    if (result) printf("profile: %.200s…\n", result);
    kestrel_string_free(result);

    kestrel_string_free(single_classification);
    free(single_generation);
    free(rgba);
    kestrel_model_free(clf);
    kestrel_runtime_free(rt); /* before the last model: models keep the context alive */
    kestrel_model_free(llm);
    if (failures) {
        fprintf(stderr, "acceptance: %d failure(s)\n", failures);
        return 1;
    }
    printf("acceptance: ok\n");
    return 0;
}
