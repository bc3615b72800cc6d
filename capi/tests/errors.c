/* Every error path of kestrel.h: NULL arguments, malformed JSON, bad files, bad images, the
 * wrong kind of model; each returns a non-OK status with a message and leaves out-parameters
 * NULL. Runs under valgrind (scripts/test-capi.sh): no definitely-lost bytes.
 * Usage: errors SLAB_MODEL_FILE TMPDIR */
#include "common.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SLAB_MODEL_FILE TMPDIR\n", argv[0]);
        return 2;
    }
    const char *slab = argv[1], *tmp = argv[2];

    CHECK(kestrel_abi_version() == KESTREL_ABI_VERSION, "abi %u", kestrel_abi_version());
    CHECK(kestrel_last_error() != NULL && kestrel_last_error()[0] == '\0', "fresh thread has an error");

    /* Frees and cancel accept NULL. */
    kestrel_runtime_free(NULL);
    kestrel_model_free(NULL);
    kestrel_model_cancel(NULL);
    kestrel_string_free(NULL);

    /* Runtime options. */
    kestrel_runtime *rt = (kestrel_runtime *)1;
    EXPECT_STATUS(kestrel_runtime_create(NULL, NULL), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_runtime_create("{", &rt), KESTREL_ERR_INVALID_ARGUMENT);
    CHECK(rt == NULL, "out not cleared on failure");
    EXPECT_STATUS(kestrel_runtime_create("[1]", &rt), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_runtime_create("{\"backnd\": \"gl\"}", &rt), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_runtime_create("{\"no_f16\": 1}", &rt), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_runtime_create("{\"backend\": \"glide\"}", &rt), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_runtime_create("{\"adapter\": \"no such adapter\"}", &rt), KESTREL_ERR_GPU);
    CHECK(rt == NULL, "out not cleared on failure");
    EXPECT_STATUS(kestrel_runtime_create("\xff\xfe", &rt), KESTREL_ERR_INVALID_ARGUMENT);

    EXPECT_STATUS(kestrel_runtime_create(NULL, &rt), KESTREL_OK);
    CHECK(rt != NULL, "no runtime");
    CHECK(kestrel_last_error()[0] == '\0', "success left an error: %s", kestrel_last_error());

    /* Loading. */
    char bad[1024], missing[1024];
    snprintf(bad, sizeof bad, "%s/garbage.bin", tmp);
    snprintf(missing, sizeof missing, "%s/does-not-exist.gguf", tmp);
    FILE *f = fopen(bad, "wb");
    fputs("this is not a model file, nor any weight file at all", f);
    fclose(f);
    kestrel_model *m = (kestrel_model *)1;
    EXPECT_STATUS(kestrel_model_load(NULL, slab, NULL, &m), KESTREL_ERR_INVALID_ARGUMENT);
    CHECK(m == NULL, "out not cleared on failure");
    EXPECT_STATUS(kestrel_model_load(rt, NULL, NULL, &m), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_model_load(rt, slab, NULL, NULL), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_model_load(rt, missing, NULL, &m), KESTREL_ERR_IO);
    CHECK(strstr(kestrel_last_error(), "does-not-exist") != NULL, "message names the file: %s", kestrel_last_error());
    EXPECT_STATUS(kestrel_model_load(rt, bad, NULL, &m), KESTREL_ERR_FORMAT);
    EXPECT_STATUS(kestrel_model_load(rt, slab, "{\"quant\": ", &m), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_model_load(rt, slab, "{\"quant\": \"w3\"}", &m), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_model_load(rt, slab, "{\"kind\": \"vlm\"}", &m), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_model_load(rt, slab, "{\"arch\": \"no_such_arch\"}", &m), KESTREL_ERR_FORMAT);
    EXPECT_STATUS(kestrel_model_load(rt, slab, "{\"kind\": \"generator\"}", &m), KESTREL_ERR_FORMAT);
    CHECK(m == NULL, "out not cleared on failure");

    EXPECT_STATUS(kestrel_model_load(rt, slab, "{\"top\": 3}", &m), KESTREL_OK);
    CHECK(m != NULL, "no model");

    /* Classification arguments. */
    uint8_t pixels[4 * 4 * 4] = {0};
    char *out = (char *)1;
    kestrel_image img = {pixels, 4, 4, 16, KESTREL_PIXEL_RGBA8};
    EXPECT_STATUS(kestrel_classify(NULL, &img, &out), KESTREL_ERR_INVALID_ARGUMENT);
    CHECK(out == NULL, "out not cleared on failure");
    EXPECT_STATUS(kestrel_classify(m, NULL, &out), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_classify(m, &img, NULL), KESTREL_ERR_INVALID_ARGUMENT);
    kestrel_image zero_w = {pixels, 0, 4, 16, KESTREL_PIXEL_RGBA8};
    kestrel_image zero_h = {pixels, 4, 0, 16, KESTREL_PIXEL_RGBA8};
    kestrel_image short_stride = {pixels, 4, 4, 15, KESTREL_PIXEL_RGBA8};
    kestrel_image short_rgb = {pixels, 4, 4, 11, KESTREL_PIXEL_RGB8};
    kestrel_image no_data = {NULL, 4, 4, 16, KESTREL_PIXEL_RGBA8};
    kestrel_image bad_format = {pixels, 4, 4, 16, (kestrel_pixel_format)7};
    EXPECT_STATUS(kestrel_classify(m, &zero_w, &out), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_classify(m, &zero_h, &out), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_classify(m, &short_stride, &out), KESTREL_ERR_INVALID_ARGUMENT);
    CHECK(strstr(kestrel_last_error(), "stride") != NULL, "message: %s", kestrel_last_error());
    EXPECT_STATUS(kestrel_classify(m, &short_rgb, &out), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_classify(m, &no_data, &out), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_classify(m, &bad_format, &out), KESTREL_ERR_INVALID_ARGUMENT);
    CHECK(out == NULL, "out set on failure");

    /* Generation and profiling arguments; a classifier does not generate. */
    EXPECT_STATUS(kestrel_generate(NULL, "{\"prompt\": \"hi\"}", NULL, NULL, NULL, &out), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_generate(m, NULL, NULL, NULL, NULL, &out), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_generate(m, "{\"prompt\": \"hi\"}", NULL, NULL, NULL, NULL), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_generate(m, "{\"prompt\": \"hi\"", NULL, NULL, NULL, &out), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_generate(m, "{\"prompt\": \"hi\", \"max_token\": 3}", NULL, NULL, NULL, &out), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_generate(m, "{\"prompt\": \"hi\"}", NULL, NULL, NULL, &out), KESTREL_ERR_UNSUPPORTED);
    EXPECT_STATUS(kestrel_model_profile(NULL, NULL, &out), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_model_profile(m, NULL, NULL), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_model_profile(m, "{\"iters\": \"many\"}", &out), KESTREL_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(kestrel_model_profile(m, "nope", &out), KESTREL_ERR_INVALID_ARGUMENT);
    CHECK(out == NULL, "out set on failure");

    /* A message stays until this thread's next call; a success clears it. */
    CHECK(strstr(kestrel_last_error(), "profile request") != NULL, "message: %s", kestrel_last_error());
    CHECK(kestrel_abi_version() == 1, "abi");
    kestrel_model_cancel(m); /* no call running: no effect on the next one */

    kestrel_model_free(m);
    kestrel_runtime_free(rt);
    remove(bad);
    if (failures) {
        fprintf(stderr, "errors: %d failure(s)\n", failures);
        return 1;
    }
    printf("errors: ok\n");
    return 0;
}
