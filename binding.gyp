{
  "variables": {
    "with_liblxc%": "<!(node scripts/has-liblxc.js)"
  },
  "target_defaults": {
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    "cflags_cc!": ["-fno-exceptions"]
  },
  "targets": [
    {
      "target_name": "lxq_sys",
      "sources": [
        "native/sys_addon.cc",
        "native/process.cc",
        "native/fdwatch.cc",
        "native/pidwatch.cc",
        "native/uevent.cc",
        "native/splice.cc",
        "native/mount.cc",
        "native/runner/protocol.cc"
      ],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"]
    },
    {
      "target_name": "lxq_stamper",
      "type": "executable",
      "sources": ["native/stamper/main.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra"]
    }
  ],
  "conditions": [
    ["with_liblxc==1", {
      "targets": [
        {
          "target_name": "lxq_lxc",
          "sources": [
            "native/lxc_addon.cc",
            "native/container.cc",
            "native/start.cc",
            "native/attach.cc",
            "native/runner/client.cc",
            "native/runner/protocol.cc"
          ],
          "libraries": ["<!@(pkg-config --libs lxc 2>/dev/null || echo -llxc)"],
          "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"]
        },
        {
          "target_name": "lxq_runner",
          "type": "executable",
          "sources": ["native/runner/main.cc", "native/runner/protocol.cc"],
          "libraries": ["<!@(pkg-config --libs lxc 2>/dev/null || echo -llxc)"]
        },
        {
          "target_name": "lxq_intercept",
          "type": "executable",
          "sources": ["native/intercept/main.c"],
          "cflags": ["-std=gnu11", "-Wall", "-Wextra"]
        }
      ]
    }]
  ]
}
