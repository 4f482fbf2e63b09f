{
  "targets": [
    {
      "target_name": "tessera_native",
      "sources": ["src/tessera_native.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=c11"],
      "libraries": ["-lisal"]
    }
  ]
}
