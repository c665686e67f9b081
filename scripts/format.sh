#!/usr/bin/env bash
# Formats the Swift sources in place with the toolchain's swift-format and the repository's
# .swift-format; scripts/lint.sh checks the result. What the formatter cannot fix is left for
# scripts/lint.sh to report.
set -euo pipefail
cd "$(dirname "$0")/.."
exec swift format format --in-place --parallel --recursive Sources Plugins Tests Package.swift
