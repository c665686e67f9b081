#!/usr/bin/env bash
# Fails when a Swift source differs from what scripts/format.sh would make of it, or breaks one of
# .swift-format's rules (swift format lint --strict: warnings count as errors).
#
# .swift-format is the toolchain's default configuration (`swift format dump-configuration`) with
# the project's indentation (4 spaces) and line length (120, where the code already wraps), and
# these rules off, each because it fights the project's style or is not worth it:
#   AlwaysUseLowerCamelCase        the CNI versions are named like the spec's (`v0_4_0`, `v1_0_0`)
#   DoNotUseSemicolons             `self.a = a; self.b = b` keeps an initializer's related
#                                  assignments on one line, as the code does throughout
#   GroupNumericLiterals           hex constants (SHA-512's round constants, etcd's lease IDs) are
#                                  written as in the spec and in etcd's output, to compare at a glance
#   OneCasePerLine                 an error's kinds, a method's spellings (`add = "ADD", del = "DEL"`)
#                                  read best as one list
#   OneVariableDeclarationPerLine  `var a = stat(), b = stat()` declares a pair that belongs together
set -euo pipefail
cd "$(dirname "$0")/.."
exec swift format lint --strict --parallel --recursive Sources Plugins Tests Package.swift
