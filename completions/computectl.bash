# bash completion for computectl(1); installed by `make install` into
# $(PREFIX)/share/bash-completion/completions/computectl.
# tests/integration/test_computectl_docs.py checks these lists against
# `computectl --help` and `computectl COMMAND --help` (both ways).

_computectl_global="--socket --url --token --json --timeout --help -h --version"
_computectl_commands="host image list networks show launch start stop reboot resize confirm-resize revert-resize terminate wait operation console events help"

# The options of one command (besides the global ones).
_computectl_opts() {
    case $1 in
        image) echo "--source --digest --glance-id --wait --wait-timeout" ;;
        list) echo "--state --name" ;;
        launch) echo "--type --vcpus --memory --disk --image --image-url --digest --glance-id --kernel" \
                     "--initrd --cmdline --user-data-file --network --key --meta --hostname --az" \
                     "--http-tokens --http-endpoint --hop-limit --config-drive --request-id --wait" \
                     "--wait-timeout" ;;
        start|reboot|terminate|confirm-resize|revert-resize) echo "--request-id --wait --wait-timeout" ;;
        resize) echo "--type --vcpus --memory --disk --live --cold --stop-timeout --request-id --wait" \
                     "--wait-timeout" ;;
        stop) echo "--force --stop-timeout --request-id --wait --wait-timeout" ;;
        wait) echo "--state --timeout" ;;
        console) echo "--tail --follow -f --attach --connect" ;;
        events) echo "--follow -f --instance --type --after" ;;
        host|networks|show|operation|help) echo "" ;;
    esac
}

_computectl() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local cmd="" i w

    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        case $w in
            --socket|--url|--token|--timeout) ((i++)) ;;   # global options' values
            -*) ;;
            *) cmd=$w; break ;;
        esac
    done

    # values of the options that take one
    case $prev in
        --socket|--user-data-file|--image|--kernel|--initrd)
            COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --state)
            COMPREPLY=($(compgen -W "pending running stopping stopped shutting-down terminated error resized" -- "$cur"))
            return ;;
        --http-tokens) COMPREPLY=($(compgen -W "optional required" -- "$cur")); return ;;
        --http-endpoint) COMPREPLY=($(compgen -W "enabled disabled" -- "$cur")); return ;;
        --url|--token|--timeout|--type|--vcpus|--memory|--disk|--image-url|--digest|--glance-id|\
        --cmdline|--network|--key|--meta|--hostname|--az|--hop-limit|--request-id|--wait-timeout|\
        --stop-timeout|--source|--name|--tail|--connect|--instance|--after)
            return ;;
    esac
    if [[ $cur == --config-drive=* ]]; then
        COMPREPLY=($(compgen -W "config-2 nocloud" -- "${cur#--config-drive=}"))
        return
    fi

    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "$_computectl_global" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$_computectl_commands" -- "$cur"))
        fi
        return
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_computectl_opts "$cmd") $_computectl_global" -- "$cur"))
        return
    fi
    case $cmd in
        host) [[ $prev == host ]] && COMPREPLY=($(compgen -W "disable enable" -- "$cur")) ;;
        image) [[ $prev == image ]] && COMPREPLY=($(compgen -W "list show pull delete" -- "$cur")) ;;
        help) [[ $prev == help ]] && COMPREPLY=($(compgen -W "$_computectl_commands" -- "$cur")) ;;
    esac
}

complete -F _computectl computectl
