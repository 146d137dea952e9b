# bash completion for cairn and cairn-server (installed as
# /usr/share/bash-completion/completions/cairn and …/cairn-server).
# Subcommands and options come from the program's own --help, so the
# completion never drifts from the command line.

_cairn_help_words() {
  # $1: program, rest: the subcommand words typed so far.
  local prog=$1
  shift
  "$prog" "$@" --help 2>/dev/null | awk '
    /^(SUBCOMMANDS|Subcommands):/ { sec = "sub"; next }
    /^(OPTIONS|Options):/ { sec = "opt"; next }
    /^[^ ]/ { sec = "" }
    sec == "sub" && $1 ~ /^[a-z]/ { print $1 }
    sec == "opt" { for (i = 1; i <= NF; i++) if ($i ~ /^--[a-z]/) { w = $i; sub(/[,=].*/, "", w); print w } }'
}

_cairn_complete() {
  local cur prog words=() i w
  cur=${COMP_WORDS[COMP_CWORD]}
  prog=${COMP_WORDS[0]}
  # The subcommand path so far: words that are not options or option values.
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=${COMP_WORDS[i]}
    case $w in
      -*) ;;
      *)
        case ${COMP_WORDS[i - 1]} in
          --data|--config|--repo|--token-file|--fingerprint|--output|--keyfile|--passphrase-file) ;;
          *) words+=("$w") ;;
        esac
        ;;
    esac
  done
  case ${COMP_WORDS[COMP_CWORD - 1]} in
    --data|--config|--token-file|--keyfile|--passphrase-file|--tls-cert|--tls-key|--web-dir)
      COMPREPLY=($(compgen -f -- "$cur"))
      return
      ;;
    --output)
      COMPREPLY=($(compgen -W "text json" -- "$cur"))
      return
      ;;
  esac
  # Only the leading words that are subcommands name the help to ask for.
  local path=() candidates
  for w in "${words[@]}"; do
    if _cairn_help_words "$prog" "${path[@]}" | grep -qx -- "$w"; then
      path+=("$w")
    else
      break
    fi
  done
  candidates=$(_cairn_help_words "$prog" "${path[@]}")
  COMPREPLY=($(compgen -W "$candidates" -- "$cur"))
  if [ ${#COMPREPLY[@]} -eq 0 ]; then
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -F _cairn_complete cairn cairn-server
