// The Kotlin API (src/main/kotlin), the JNI bridge it calls (src/main/java) and the Rust
// libraries (src/main/jniLibs/<abi>/libkestrel_jni.so, written by ../build-jni.sh).
plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "dev.kestrel"
    compileSdk = 35

    defaultConfig {
        // Vulkan 1.0 (wgpu's Android back end) from Android 7.0.
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
        ndk {
            abiFilters += listOf("arm64-v8a", "armeabi-v7a", "x86_64")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    sourceSets["main"].jniLibs.srcDirs("src/main/jniLibs")

    packaging {
        // Store the .so files uncompressed and page-aligned in the APK (loaded in place).
        jniLibs.useLegacyPackaging = false
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.9.0")
}

// The native libraries are Rust (android/jni): built by ../build-jni.sh with the NDK before
// the Android build packages them. `-PkestrelSkipRust` packages what src/main/jniLibs holds.
val buildRust by tasks.registering(Exec::class) {
    workingDir = rootDir
    commandLine("./build-jni.sh")
}
if (!project.hasProperty("kestrelSkipRust")) {
    tasks.named("preBuild") { dependsOn(buildRust) }
}
