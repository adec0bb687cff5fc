using System;
using UnityEngine.Events;

namespace NpcServer.Dialogue.Unity
{
    /// <summary>A UnityEvent with a string: a delta, a whole text, or an error message.</summary>
    [Serializable]
    public sealed class NpcTextEvent : UnityEvent<string>
    {
    }

    /// <summary>
    /// A finished line: its text, and the structured payload as JSON text (empty for a free-text persona or an
    /// invalid payload).
    /// </summary>
    [Serializable]
    public sealed class NpcLineEvent : UnityEvent<string, string>
    {
    }

    /// <summary>An action call: the action's name and its arguments as JSON text.</summary>
    [Serializable]
    public sealed class NpcActionEvent : UnityEvent<string, string>
    {
    }
}
